//! Use cases. Each one combines the domain rules, the store and the hot-path registry, and
//! returns domain values or an [`crate::error::ApiError`] the routes send as is.

pub mod checkin;
pub mod registrations;
