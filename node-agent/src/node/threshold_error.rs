//! Why an eviction or reservation flag was refused. The texts are what `--eviction-hard`,
//! `--eviction-minimum-reclaim`, `--kube-reserved` and `--system-reserved` print on a bad value.

use std::num::ParseFloatError;

use keelson_api::quantity::QuantityError;

/// A bad `signal<value` (`--eviction-hard`) or `signal=value` (`--eviction-minimum-reclaim`)
/// list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// An `--eviction-hard` item without `<`.
    #[error("invalid eviction threshold {item:?}: want signal<value")]
    NotAThreshold {
        /// The item as given.
        item: String,
    },
    /// An `--eviction-minimum-reclaim` item without `=`.
    #[error("invalid minimum reclaim {item:?}: want signal=value")]
    NotAMinimumReclaim {
        /// The item as given.
        item: String,
    },
    /// A signal the kubelet does not know.
    #[error("unsupported eviction signal {signal}")]
    UnsupportedSignal {
        /// The signal as given.
        signal: String,
    },
    /// `N%` where N is not a number.
    #[error("invalid percentage {value:?} for {signal}")]
    Percentage {
        /// The signal.
        signal: String,
        /// The value as given, `%` included.
        value: String,
        /// Why N is not a number.
        #[source]
        source: ParseFloatError,
    },
    /// A threshold percentage outside 0..=100.
    #[error("eviction percentage threshold {signal} must be >= 0% and <= 100%: {value}")]
    PercentageRange {
        /// The signal.
        signal: String,
        /// The value as given, `%` included.
        value: String,
    },
    /// A minimum reclaim percentage of zero or less.
    #[error("eviction percentage minimum reclaim {signal} must be positive: {value}")]
    ReclaimPercentage {
        /// The signal.
        signal: String,
        /// The value as given, `%` included.
        value: String,
    },
    /// Not a quantity.
    #[error("invalid quantity {value:?} for {signal}")]
    Quantity {
        /// The signal.
        signal: String,
        /// The value as given.
        value: String,
        /// Why it is not a quantity.
        #[source]
        source: QuantityError,
    },
    /// A negative minimum reclaim quantity.
    #[error("negative eviction minimum reclaim specified for {signal}")]
    NegativeReclaim {
        /// The signal.
        signal: String,
    },
}

/// A bad `resource=quantity` list (`--kube-reserved`, `--system-reserved`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReservationError {
    /// An item without `=`.
    #[error("invalid reservation {item:?}: want resource=quantity")]
    NotAReservation {
        /// The item as given.
        item: String,
    },
    /// A resource other than cpu, memory, ephemeral-storage and pid.
    #[error("unsupported reserved resource {resource}")]
    UnsupportedResource {
        /// The resource as given.
        resource: String,
    },
    /// Not a quantity.
    #[error("invalid quantity {value:?} for {resource}")]
    Quantity {
        /// The resource.
        resource: String,
        /// The value as given.
        value: String,
        /// Why it is not a quantity.
        #[source]
        source: QuantityError,
    },
    /// A negative reservation.
    #[error("reserved {resource} must not be negative")]
    Negative {
        /// The resource.
        resource: String,
    },
}
