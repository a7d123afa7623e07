-- revision: 9d5b2c7f1e46
-- down_revision: 2f7a0e4d9c18
-- message: add user active flag
-- create_date: 2026-02-17 15:50:31.118806

-- flotilla:upgrade
ALTER TABLE users ADD COLUMN is_active boolean NOT NULL DEFAULT true;

-- flotilla:downgrade
ALTER TABLE users DROP COLUMN is_active;
