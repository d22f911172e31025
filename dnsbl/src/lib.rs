//! Moat's DNS blocklists: rbldnsd-compatible datasets served over DNS and in-process.
//!
//! Nothing is here yet; issue #3 builds it. See README.md.
