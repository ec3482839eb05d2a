/* Stand-in libc header for `cargo check --target aarch64-apple-darwin` on Linux CI (see TargetConditionals.h). */
#pragma once
#include <stddef.h>
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *s, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
