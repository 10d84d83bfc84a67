//! The JSON records of every command, as serde types with unknown fields denied: what the
//! commands write, what `check` and `index` read back, and what the tests compare as whole
//! values. One module per command; `sum`'s also writes its records as text lines.

pub mod index;
pub mod pixels;
pub mod similar;
pub mod sum;
