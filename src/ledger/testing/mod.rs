//! The ledger's shared test suite: every backend must pass every check here.
//!
//! Each `check_*` function takes a [`Store`], a factory of connections to one fresh, empty ledger, and panics
//! when the backend breaks a rule. [`crate::ledger_suite!`] turns the whole list into `#[test]`s for one
//! backend: the SQLite ledger runs it in its unit tests, the PostgreSQL ledger in `tests/ledger_backends.rs`
//! (which has a server). Not part of the supported API.

mod concurrent;
mod queue;
mod records;

pub use concurrent::*;
pub use queue::*;
pub use records::*;

use super::Ledger;

/// A fresh, empty ledger that hands out connections to itself: each [`Store::connect`] is another runner (or
/// another process reading).
pub trait Store: Sync {
    type L: Ledger + Send;
    fn connect(&self) -> Self::L;
    /// The location errors name (a path, or a redacted url).
    fn location(&self) -> String;
}

/// One `#[test]` per check of the shared suite, each on a fresh store made by `$store` (an expression that
/// implements [`Store`]).
#[doc(hidden)]
#[macro_export]
macro_rules! ledger_suite {
    ($store:expr) => {
        $crate::ledger_suite!(@each $store;
            check_claims_in_order_once,
            check_tenants_at_target_are_recorded_skipped_and_never_claimed,
            check_named_run_is_shared,
            check_lapsed_lease_hands_tenants_over,
            check_placement,
            check_canaries_and_halt,
            check_last_runner_finishes,
            check_connection_shares,
            check_concurrent_claims_take_each_tenant_once,
            check_concurrent_opens_of_one_name_make_one_run,
            check_lifecycle_from_begin_to_finish,
            check_update_replaces_the_whole_tenant_state,
            check_batch_with_an_unknown_tenant_is_rolled_back_whole,
            check_finish_run_interrupts_running_tenants_and_leaves_unstarted_ones_pending,
            check_finished_run_refuses_further_writes,
            check_unfinished_run_after_a_crash_retries_its_unfinished_tenants,
            check_latest_is_the_run_begun_last,
            check_run_by_id_and_unknown_id,
            check_tenants_filtered_by_status,
            check_duplicate_tenant_records_nothing,
            check_ten_thousand_tenants_in_batches,
            check_reader_in_another_thread_while_the_run_writes,
            check_status_json_has_the_contract_shape,
            check_target_revisions_are_kept_once_set,
            check_repeated_updates_in_one_batch,
        );
    };
    (@each $store:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::ledger::testing::$check(&$store);
            }
        )*
    };
}
