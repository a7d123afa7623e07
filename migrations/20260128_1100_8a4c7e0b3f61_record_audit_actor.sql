-- revision: 8a4c7e0b3f61
-- down_revision: 1d9b6f2e7c35
-- message: record audit actor
-- create_date: 2026-01-28 11:00:27.655430

-- flotilla:upgrade
-- A stable default keeps this a catalog-only change, with no table rewrite.
ALTER TABLE audit_log ADD COLUMN actor text NOT NULL DEFAULT current_user;

-- flotilla:downgrade
ALTER TABLE audit_log DROP COLUMN actor;
