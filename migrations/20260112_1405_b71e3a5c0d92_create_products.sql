-- revision: b71e3a5c0d92
-- down_revision: 4c2d8e1f9a07
-- message: create products
-- create_date: 2026-01-12 14:05:40.200917

-- flotilla:upgrade
CREATE TABLE products (
    id bigserial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- flotilla:downgrade
DROP TABLE products;
