//! Quota accounting: may one more invocation start? Pure; the leader's
//! [`super::leader`] counts, this decides.
//!
//! Lambda's semantics, per region: the region runs at most `quota` at once. A
//! function with reserved concurrency R runs at most R at once and can always
//! run R, because functions without a reservation share only what the
//! reservations leave (`quota - reserved_total`). Reserving 0 stops a function.

use crate::error::ThrottleReason;

/// Invocations running now, as counted by the leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every invocation in the region.
    pub region: u32,
    /// Those of functions without a reservation.
    pub unreserved: u32,
    /// Those of the function asking.
    pub function: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub quota: u32,
    /// The sum of every function's reservation.
    pub reserved_total: u32,
    /// The asking function's reservation.
    pub reserved: Option<u32>,
}

/// Whether one more invocation may start.
pub fn admit(usage: Usage, limits: Limits) -> Result<(), ThrottleReason> {
    match limits.reserved {
        Some(reserved) if usage.function >= reserved => {
            Err(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
        }
        // Within its reservation; the region check only matters when an
        // operator lowered the quota below the reservations.
        Some(_) if usage.region >= limits.quota => Err(ThrottleReason::ConcurrentInvocationLimitExceeded),
        Some(_) => Ok(()),
        None => {
            let pool = limits.quota.saturating_sub(limits.reserved_total);
            if usage.unreserved >= pool || usage.region >= limits.quota {
                Err(ThrottleReason::ConcurrentInvocationLimitExceeded)
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThrottleReason::*;

    fn limits(quota: u32, reserved_total: u32, reserved: Option<u32>) -> Limits {
        Limits {
            quota,
            reserved_total,
            reserved,
        }
    }

    fn usage(region: u32, unreserved: u32, function: u32) -> Usage {
        Usage {
            region,
            unreserved,
            function,
        }
    }

    #[test]
    fn region_quota_edges() {
        assert_eq!(admit(usage(9, 9, 9), limits(10, 0, None)), Ok(()));
        assert_eq!(
            admit(usage(10, 10, 0), limits(10, 0, None)),
            Err(ConcurrentInvocationLimitExceeded)
        );
        assert_eq!(
            admit(usage(0, 0, 0), limits(0, 0, None)),
            Err(ConcurrentInvocationLimitExceeded)
        );
        assert_eq!(admit(usage(0, 0, 0), limits(1, 0, None)), Ok(()));
    }

    #[test]
    fn a_reservation_caps_the_function() {
        assert_eq!(admit(usage(3, 0, 2), limits(10, 3, Some(3))), Ok(()));
        assert_eq!(
            admit(usage(3, 0, 3), limits(10, 3, Some(3))),
            Err(ReservedFunctionConcurrentInvocationLimitExceeded)
        );
    }

    #[test]
    fn reserving_zero_stops_the_function() {
        assert_eq!(
            admit(usage(0, 0, 0), limits(10, 0, Some(0))),
            Err(ReservedFunctionConcurrentInvocationLimitExceeded)
        );
    }

    #[test]
    fn a_reservation_is_guaranteed_while_others_fill_the_pool() {
        // Quota 10, function A reserves 4: the unreserved pool is 6.
        // Six unreserved invocations fill it; a seventh is refused…
        assert_eq!(
            admit(usage(6, 6, 0), limits(10, 4, None)),
            Err(ConcurrentInvocationLimitExceeded)
        );
        // …while A still gets all of its 4.
        for running in 0..4 {
            assert_eq!(admit(usage(6 + running, 6, running), limits(10, 4, Some(4))), Ok(()));
        }
    }

    #[test]
    fn the_unreserved_pool_is_what_reservations_leave() {
        assert_eq!(admit(usage(5, 5, 1), limits(10, 4, None)), Ok(()));
        // Unreserved invocations cannot use idle reserved capacity.
        assert_eq!(
            admit(usage(6, 6, 0), limits(10, 4, None)),
            Err(ConcurrentInvocationLimitExceeded)
        );
    }

    #[test]
    fn a_quota_lowered_below_the_reservations_still_holds() {
        assert_eq!(
            admit(usage(5, 0, 2), limits(5, 8, Some(8))),
            Err(ConcurrentInvocationLimitExceeded)
        );
        assert_eq!(
            admit(usage(0, 0, 0), limits(5, 8, None)),
            Err(ConcurrentInvocationLimitExceeded)
        );
    }
}
