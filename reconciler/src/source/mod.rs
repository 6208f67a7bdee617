//! Sources of project files beyond the compiler's work tree: a git tree at
//! any revision.

pub mod git;
