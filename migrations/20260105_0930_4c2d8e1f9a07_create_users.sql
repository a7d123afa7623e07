-- revision: 4c2d8e1f9a07
-- down_revision:
-- message: create users
-- create_date: 2026-01-05 09:30:12.481516

-- flotilla:upgrade
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- flotilla:downgrade
DROP TABLE users;
