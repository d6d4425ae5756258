//! `resource.Quantity` text as keelson parses it (requests, limits, quotas), with kube's
//! round trip: the canonical text of a parsed quantity parses back to the same quantity.

use keelson_api::quantity::Quantity;

/// Parses the input (as given and trimmed), reads it every way the callers do and checks the
/// canonical form round-trips.
pub(crate) fn parse(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let _ = Quantity::parse_trimmed(text);
    let Ok(quantity) = Quantity::parse(text) else {
        return;
    };
    let _ = (
        quantity.value(),
        quantity.milli_value(),
        quantity.nanos(),
        quantity.is_zero(),
        quantity.is_negative(),
    );
    let _ = quantity.checked_add(quantity);
    let _ = quantity.checked_sub(quantity);
    let canonical = quantity.to_string();
    let again = Quantity::parse(&canonical)
        .unwrap_or_else(|e| panic!("{text:?} prints as {canonical:?}, which does not parse: {e}"));
    assert_eq!(
        again, quantity,
        "{text:?} prints as {canonical:?}, which parses to another quantity"
    );
}
