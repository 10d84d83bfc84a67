//! The integration tests, one binary (as ripgrep and fd keep theirs): each module tests one
//! side of the worker through the real `omero-iscc` binary, `harness` runs it and the
//! reference tools, and `house` checks the module graph of `src/` against
//! docs/architecture.md.

mod harness;

mod budgets;
mod changed_while_reading;
mod check;
mod confinement;
mod edges;
mod house;
mod ignore_parity;
mod index;
mod pixels;
mod proptest_hashing;
mod similar;
mod streams;
mod sum_inputs;
mod sum_reference;
