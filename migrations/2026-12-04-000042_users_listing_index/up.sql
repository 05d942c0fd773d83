-- A page of members shows each member's email and display name. Read through
-- the primary key, that is an index descent and a heap page per member; from
-- this index it is the descent alone (an index-only scan): at 400,000
-- organizations a page of 50 reads 154 shared buffers of users instead of 204
-- (BENCHMARKS.md, item 27). Users' email and display name change rarely.
CREATE INDEX users_listing ON users (id) INCLUDE (email, display_name);
