-- revision: 6e1f3b8a2d54
-- down_revision: 9d5b2c7f1e46
-- message: backfill order item count
-- create_date: 2026-02-24 10:05:12.402117

-- flotilla:upgrade
-- Expand: a nullable column, cheap to add; the application writes it for new orders from now on.
ALTER TABLE orders ADD COLUMN item_count integer;

-- flotilla:backfill table=orders key=id batch_size=1000 pause=20ms target=200ms reverse=none
UPDATE orders o
SET item_count = (SELECT count(*) FROM order_items i WHERE i.order_id = o.id)
WHERE {{batch}} AND o.item_count IS NULL;

-- Contract: every row has a value now.
ALTER TABLE orders ALTER COLUMN item_count SET NOT NULL;

-- flotilla:downgrade
ALTER TABLE orders DROP COLUMN item_count;
