/* fm_spool.h: the prediction log's spool: an append-only store on local disk
 * for what the writer could not send to PostgreSQL (database down or too
 * slow), replayed in order once it is back. Each record is a type, a 16-byte
 * id (the unit's exactly-once id) and an opaque payload, checksummed, so a
 * record torn by a crash or damaged on disk is detected and skipped rather
 * than replayed wrong.
 *
 * Layout (docs/database.md, "The spool"): a directory holding a LOCK file
 * (flock: one process per spool), segment files NNNNNNNNNNNNNNNN.spool (16
 * hex digits, increasing) of at most FM_SPOOL_SEGMENT_BYTES each, and for a
 * segment being replayed a NNNNNNNNNNNNNNNN.done file with the offset
 * replayed so far. A segment file starts with the 16-byte header "FMSPOOL\0",
 * uint32 version 1, uint32 0; then records, little-endian:
 *
 *   uint32 magic 0x31524d46 ("FMR1")  uint32 type  uint32 payload length
 *   uint32 CRC-32C of (type, length, id, payload)  uint8 id[16]  payload
 *
 * Threads: appends, seal, sync and stats may come from any thread (one
 * mutex); next/ack are the replayer's and must come from one thread. A
 * record is written with one write(2) and reaches the disk at the next
 * fm_spool_sync (the writer syncs every second and at each seal), so a
 * process crash loses nothing appended and a power loss at most the last
 * second. */
#ifndef FM_SPOOL_H
#define FM_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#define FM_SPOOL_SEGMENT_BYTES (16u << 20)
#define FM_SPOOL_RECORD_HEADER 32u
#define FM_SPOOL_MAX_PAYLOAD (256u << 20)

typedef struct fm_spool fm_spool_t;

/* Opens the spool in `dir` (created when missing), takes its lock, and
 * finds the segments a previous run left: they are replayed first.
 * max_bytes bounds the segment files together (0: only the disk does).
 * FM_EUNAVAILABLE when another process holds the lock; FM_EIO otherwise. */
int fm_spool_open(const char *dir, uint64_t max_bytes, fm_spool_t **out);
/* Syncs and closes (segments stay on disk for the next run). */
void fm_spool_close(fm_spool_t *sp);

/* Appends one record. FM_EOVERLOADED when it would take the spool past
 * max_bytes; FM_EIO when the disk refuses it (full, read-only): the partial
 * record is cut off again. Never blocks on anything but the local disk. */
int fm_spool_append(fm_spool_t *sp, uint32_t type, const uint8_t id[16], const void *payload, size_t len);
/* fdatasync of the segment being appended (no-op when nothing is new). */
int fm_spool_sync(fm_spool_t *sp);
/* Ends the segment being appended so that the replayer can read it (the
 * next append starts a new one); no-op when it is empty. */
int fm_spool_seal(fm_spool_t *sp);

typedef struct fm_spool_record {
    uint32_t type;
    uint8_t id[16];
    const uint8_t *payload; /* valid until the next fm_spool_next */
    size_t len;
    uint64_t segment;       /* which segment, and where the next record starts */
    uint64_t next_offset;
} fm_spool_record_t;

/* The next record of the oldest sealed segment: 1 with *rec set, 0 when no
 * sealed record is left, or a negative code (a segment that cannot be read:
 * it is kept and reported). Damaged records are skipped, counted and
 * logged; a segment whose records are all handled is deleted. */
int fm_spool_next(fm_spool_t *sp, fm_spool_record_t *rec);
/* The record returned last was handled (committed, or found committed
 * before): records the progress, and deletes the segment after its last
 * record. A crash between a commit and this call replays the record once
 * more; its id makes that harmless. */
int fm_spool_ack(fm_spool_t *sp, const fm_spool_record_t *rec);

typedef struct fm_spool_stats {
    uint64_t bytes;            /* segment files on disk now */
    int segments;              /* segment files on disk now */
    uint64_t appended, appended_bytes;
    uint64_t refused_full;     /* appends refused at max_bytes */
    uint64_t refused_io;       /* appends the disk refused */
    uint64_t damaged;          /* damaged or torn records skipped in replay */
    uint64_t damaged_bytes;
} fm_spool_stats_t;

void fm_spool_get_stats(fm_spool_t *sp, fm_spool_stats_t *out);
/* 1 when records wait for replay (sealed or in the segment being appended). */
int fm_spool_has_records(fm_spool_t *sp);

/* CRC-32C (Castagnoli), as in the record format; exposed for tests. */
uint32_t fm_crc32c(uint32_t crc, const void *data, size_t len);

#endif /* FM_SPOOL_H */
