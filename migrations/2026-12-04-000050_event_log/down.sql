DROP TABLE event_retention;
DROP TABLE events;
DROP FUNCTION notify_events();
