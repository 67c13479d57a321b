//! Quire's benchmarks: load generator, micro-benchmarks and side-by-side comparisons.
