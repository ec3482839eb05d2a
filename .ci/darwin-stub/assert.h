/* Stand-in libc header for `cargo check --target aarch64-apple-darwin` on Linux CI (see TargetConditionals.h). */
#pragma once
#define assert(x) ((void)0)
