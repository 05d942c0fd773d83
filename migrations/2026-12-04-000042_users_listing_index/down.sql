DROP INDEX users_listing;
