//! Table tests for the validation module.
