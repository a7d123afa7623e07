-- revision: bench0001
-- message: benchmark backfill

-- flotilla:upgrade

-- flotilla:backfill table=t key=id batch_size=1000 target=50ms estimate=none
UPDATE t SET v = v + 1 WHERE {{batch}};
