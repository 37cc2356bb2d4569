-- The application's schema, made on each new primary before the standbys copy it.
CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric NOT NULL DEFAULT 0);
