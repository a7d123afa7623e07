-- revision: 2f7a0e4d9c18
-- down_revision: c3e8d1a6b950
-- message: index orders concurrently
-- create_date: 2026-02-10 13:25:09.902174
-- transaction: false

-- flotilla:upgrade
-- CONCURRENTLY cannot run inside a transaction, hence `transaction: false` above.
-- Only IF [NOT] EXISTS index statements: after an interruption Flotilla re-runs this revision by itself,
-- first dropping an index the interrupted build left INVALID.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_user_id_created_at_idx
    ON orders (user_id, created_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS order_items_product_id_idx
    ON order_items (product_id);

-- flotilla:downgrade
DROP INDEX CONCURRENTLY IF EXISTS order_items_product_id_idx;
DROP INDEX CONCURRENTLY IF EXISTS orders_user_id_created_at_idx;
