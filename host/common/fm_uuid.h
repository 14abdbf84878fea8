/* fm_uuid.h: UUIDs as 16 bytes and as RFC 9562 text, and UUIDv7s built from
 * a millisecond clock and random bits. Request ids (issued by the server as
 * text) are stored as PostgreSQL's uuid type, 16 bytes in network order; the
 * prediction log's batch ids are UUIDv7s too. */
#ifndef FM_UUID_H
#define FM_UUID_H

#include <stdint.h>

#define FM_UUID_BYTES 16
#define FM_UUID_TEXT_LEN 36 /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */

/* Parses the 36-character hyphenated form (either case) into 16 bytes.
 * Returns 0 or FM_EINVAL (with a detail) when `text` is not exactly that. */
int fm_uuid_parse(const char *text, uint8_t out[FM_UUID_BYTES]);
/* Same, for a string of `len` bytes that need not end in NUL. */
int fm_uuid_parse_n(const char *text, unsigned long len, uint8_t out[FM_UUID_BYTES]);

/* Writes the lowercase hyphenated form and a NUL (37 bytes). */
void fm_uuid_format(const uint8_t id[FM_UUID_BYTES], char out[FM_UUID_TEXT_LEN + 1]);

/* The version nibble (7 for a UUIDv7). */
static inline int fm_uuid_version(const uint8_t id[FM_UUID_BYTES]) { return id[6] >> 4; }

/* The Unix milliseconds of a UUIDv7 (its first 48 bits). */
int64_t fm_uuid7_ms(const uint8_t id[FM_UUID_BYTES]);

/* A UUIDv7: 48-bit Unix milliseconds, version 7, 12 bits of `rand_a`,
 * the RFC 9562 variant, then 62 bits of `rand_b`. Deterministic, so tests
 * can build ids that sort as they want. */
void fm_uuid7_make(int64_t unix_ms, uint16_t rand_a, uint64_t rand_b, uint8_t out[FM_UUID_BYTES]);

/* A fresh UUIDv7 from the wall clock and a thread-safe random source
 * (getrandom-seeded per thread); ids made by one thread increase. */
void fm_uuid7_new(uint8_t out[FM_UUID_BYTES]);

#endif /* FM_UUID_H */
