//! Scenarios shared by the tests and the bench (each test file uses some).
#![allow(dead_code)]

pub mod mesh;
pub mod reachability;
