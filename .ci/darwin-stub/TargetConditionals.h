/* Minimal stand-in for the macOS SDK header, so C code in dependencies
 * (ring) compiles during `cargo check --target aarch64-apple-darwin` on a
 * Linux CI machine. Nothing built with it is ever linked or run. */
#pragma once
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_TV 0
#define TARGET_OS_SIMULATOR 0
