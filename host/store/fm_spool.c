/* fm_spool.c: the prediction log's append-only spool on local disk (see
 * fm_spool.h): segment files of checksummed records, one appender lock, a
 * replayer that skips torn or damaged records and remembers its progress. */
#include "fm_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_log.h"

#define SEG_MAGIC "FMSPOOL"
#define SEG_HEADER 16u
#define SEG_VERSION 1u
#define REC_MAGIC 0x31524d46u /* "FMR1" little-endian */

/* ---- CRC-32C, slicing by 8 --------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t fm_crc32c(uint32_t crc, const void *data, size_t len) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        lo ^= crc;
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The checksum of a record: type, length, id, payload. */
static uint32_t record_crc(const uint8_t *header, const void *payload, size_t len) {
    uint32_t c = fm_crc32c(0, header + 4, 8);
    c = fm_crc32c(c, header + 16, 16);
    return fm_crc32c(c, payload, len);
}

/* ---- The spool ----------------------------------------------------------- */

struct fm_spool {
    char dir[512];
    int lock_fd;
    uint64_t max_bytes;
    pthread_mutex_t mu;
    /* Appender. */
    int fd; /* segment being appended, -1 when none */
    uint64_t active_seq, active_len;
    int dirty;
    uint64_t next_seq;
    /* Sealed segments, oldest first (those a previous run left included). */
    uint64_t *segs;
    size_t nsegs, capsegs;
    uint64_t bytes;
    int nfiles;
    fm_spool_stats_t st;
    /* Replayer. */
    int loaded;
    uint64_t cur_seq;
    uint8_t *cur;
    size_t cur_len, cur_off;
    int have_rec;
    fm_spool_record_t rec;
};

static void seg_path(const fm_spool_t *sp, uint64_t seq, const char *ext, char *out, size_t cap) {
    snprintf(out, cap, "%s/%016" PRIx64 ".%s", sp->dir, seq, ext);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int push_seg(fm_spool_t *sp, uint64_t seq) {
    if (sp->nsegs == sp->capsegs) {
        size_t cap = sp->capsegs ? 2 * sp->capsegs : 16;
        uint64_t *s = realloc(sp->segs, cap * sizeof *s);
        if (!s)
            return fm_fail(FM_ENOMEM, "spool: out of memory");
        sp->segs = s;
        sp->capsegs = cap;
    }
    sp->segs[sp->nsegs++] = seq;
    return 0;
}

/* mkdir -p: the default spool directory's parents may not exist yet. */
static int make_dirs(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1; *c; c++)
        if (*c == '/') {
            *c = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return -1;
            *c = '/';
        }
    return mkdir(p, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

int fm_spool_open(const char *dir, uint64_t max_bytes, fm_spool_t **out) {
    *out = NULL;
    if (!dir || !*dir || strlen(dir) > 400)
        return fm_fail(FM_EINVAL, "spool directory missing or longer than 400 characters");
    if (make_dirs(dir) != 0)
        return fm_fail(FM_EIO, "spool directory %s: cannot create it: %s (set FM_SPOOL_DIR to a writable local "
                               "directory)",
                       dir, strerror(errno));
    fm_spool_t *sp = calloc(1, sizeof *sp);
    if (!sp)
        return fm_fail(FM_ENOMEM, "spool: out of memory");
    snprintf(sp->dir, sizeof sp->dir, "%s", dir);
    sp->max_bytes = max_bytes;
    sp->fd = -1;
    sp->next_seq = 1;
    pthread_mutex_init(&sp->mu, NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (sp->lock_fd < 0) {
        int e = errno;
        pthread_mutex_destroy(&sp->mu);
        free(sp);
        return fm_fail(FM_EIO, "spool directory %s: cannot open %s: %s", dir, path, strerror(e));
    }
    if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(sp->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(sp->lock_fd);
        pthread_mutex_destroy(&sp->mu);
        free(sp);
        return fm_fail(FM_EUNAVAILABLE, "spool directory %s is in use by another process (pid %s); give each "
                                        "fmserve its own FM_SPOOL_DIR",
                       dir, pid[0] ? pid : "?");
    }
    char pid[32];
    int pl = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(sp->lock_fd, 0) != 0 || pwrite(sp->lock_fd, pid, (size_t)pl, 0) != pl)
        fm_warn("spool", "%s: cannot write the pid into LOCK: %s", dir, strerror(errno));

    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        fm_spool_close(sp);
        return fm_fail(FM_EIO, "spool directory %s: %s", dir, strerror(e));
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        char *end;
        unsigned long long seq = strtoull(e->d_name, &end, 16);
        if (end != e->d_name + 16 || strcmp(end, ".spool") != 0)
            continue;
        struct stat st;
        seg_path(sp, seq, "spool", path, sizeof path);
        if (stat(path, &st) != 0)
            continue;
        sp->bytes += (uint64_t)st.st_size;
        sp->nfiles++;
        if (seq >= sp->next_seq)
            sp->next_seq = seq + 1;
        rc = push_seg(sp, seq);
    }
    closedir(d);
    if (rc) {
        fm_spool_close(sp);
        return rc;
    }
    if (sp->nsegs)
        qsort(sp->segs, sp->nsegs, sizeof *sp->segs, cmp_u64);
    if (sp->nsegs)
        fm_info("spool", "%s: %zu segment(s), %.1f MB left by a previous run; they are replayed when PostgreSQL is "
                         "reachable",
                dir, sp->nsegs, (double)sp->bytes / 1e6);
    *out = sp;
    return 0;
}

/* Closes the segment being appended and hands it to the replayer. Under mu. */
static int seal_locked(fm_spool_t *sp) {
    if (sp->fd < 0)
        return 0;
    int rc = 0;
    if (sp->dirty && fdatasync(sp->fd) != 0)
        rc = fm_fail(FM_EIO, "spool: fdatasync: %s", strerror(errno));
    close(sp->fd);
    sp->fd = -1;
    sp->dirty = 0;
    int prc = push_seg(sp, sp->active_seq);
    return rc ? rc : prc;
}

void fm_spool_close(fm_spool_t *sp) {
    if (!sp)
        return;
    pthread_mutex_lock(&sp->mu);
    seal_locked(sp);
    pthread_mutex_unlock(&sp->mu);
    if (sp->lock_fd >= 0)
        close(sp->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&sp->mu);
    free(sp->segs);
    free(sp->cur);
    free(sp);
}

/* Starts a new segment file. Under mu. */
static int open_segment(fm_spool_t *sp) {
    char path[600];
    uint64_t seq = sp->next_seq++;
    seg_path(sp, seq, "spool", path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return fm_fail(FM_EIO, "spool: cannot create %s: %s", path, strerror(errno));
    uint8_t h[SEG_HEADER] = {0};
    memcpy(h, SEG_MAGIC, 8);
    put_u32(h + 8, SEG_VERSION);
    if (write(fd, h, sizeof h) != (ssize_t)sizeof h) {
        int e = errno;
        close(fd);
        unlink(path);
        return fm_fail(FM_EIO, "spool: cannot write %s: %s", path, e ? strerror(e) : "short write");
    }
    sp->fd = fd;
    sp->active_seq = seq;
    sp->active_len = SEG_HEADER;
    sp->bytes += SEG_HEADER;
    sp->nfiles++;
    sp->dirty = 1;
    return 0;
}

int fm_spool_append(fm_spool_t *sp, uint32_t type, const uint8_t id[16], const void *payload, size_t len) {
    if (len > FM_SPOOL_MAX_PAYLOAD)
        return fm_fail(FM_EINVAL, "spool: a record of %zu bytes is over the %u limit", len, FM_SPOOL_MAX_PAYLOAD);
    uint8_t h[FM_SPOOL_RECORD_HEADER];
    put_u32(h, REC_MAGIC);
    put_u32(h + 4, type);
    put_u32(h + 8, (uint32_t)len);
    memcpy(h + 16, id, 16);
    put_u32(h + 12, record_crc(h, payload, len));
    uint64_t need = FM_SPOOL_RECORD_HEADER + len;
    pthread_mutex_lock(&sp->mu);
    int rc = 0;
    if (sp->fd >= 0 && sp->active_len + need > FM_SPOOL_SEGMENT_BYTES && sp->active_len > SEG_HEADER)
        rc = seal_locked(sp);
    uint64_t extra = sp->fd < 0 ? SEG_HEADER : 0;
    if (rc == 0 && sp->max_bytes && sp->bytes + extra + need > sp->max_bytes) {
        sp->st.refused_full++;
        rc = fm_fail(FM_EOVERLOADED, "spool %s is full: %.1f MB of %.1f MB used", sp->dir, (double)sp->bytes / 1e6,
                     (double)sp->max_bytes / 1e6);
        goto out;
    }
    if (rc == 0 && sp->fd < 0)
        rc = open_segment(sp);
    if (rc) {
        sp->st.refused_io++;
        goto out;
    }
    struct iovec iov[2] = {{h, sizeof h}, {(void *)payload, len}};
    ssize_t n = writev(sp->fd, iov, len ? 2 : 1);
    if (n != (ssize_t)need) {
        int e = n < 0 ? errno : ENOSPC;
        /* Cut the partial record off again; should that fail too, the
         * replayer skips it by its checksum. */
        if (n > 0 && ftruncate(sp->fd, (off_t)sp->active_len) != 0)
            fm_warn("spool", "cannot cut a partial record off %s: %s", sp->dir, strerror(errno));
        sp->st.refused_io++;
        rc = fm_fail(FM_EIO, "spool %s: writing %llu bytes: %s", sp->dir, (unsigned long long)need, strerror(e));
        goto out;
    }
    sp->active_len += need;
    sp->bytes += need;
    sp->dirty = 1;
    sp->st.appended++;
    sp->st.appended_bytes += need;
out:
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int fm_spool_sync(fm_spool_t *sp) {
    pthread_mutex_lock(&sp->mu);
    int rc = 0;
    if (sp->fd >= 0 && sp->dirty) {
        if (fdatasync(sp->fd) != 0)
            rc = fm_fail(FM_EIO, "spool: fdatasync: %s", strerror(errno));
        sp->dirty = 0;
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int fm_spool_seal(fm_spool_t *sp) {
    pthread_mutex_lock(&sp->mu);
    int rc = seal_locked(sp);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int fm_spool_has_records(fm_spool_t *sp) {
    pthread_mutex_lock(&sp->mu);
    int yes = sp->nsegs > 0 || (sp->fd >= 0 && sp->active_len > SEG_HEADER) || sp->loaded;
    pthread_mutex_unlock(&sp->mu);
    return yes;
}

void fm_spool_get_stats(fm_spool_t *sp, fm_spool_stats_t *out) {
    pthread_mutex_lock(&sp->mu);
    *out = sp->st;
    out->bytes = sp->bytes;
    out->segments = sp->nfiles;
    pthread_mutex_unlock(&sp->mu);
}

/* ---- Replay ------------------------------------------------------------- */

/* Forgets the segment being replayed: deletes its files. */
static void finish_segment(fm_spool_t *sp) {
    char path[600];
    seg_path(sp, sp->cur_seq, "spool", path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        fm_warn("spool", "cannot delete %s: %s", path, strerror(errno));
    seg_path(sp, sp->cur_seq, "done", path, sizeof path);
    unlink(path);
    pthread_mutex_lock(&sp->mu);
    sp->bytes -= sp->cur_len <= sp->bytes ? sp->cur_len : sp->bytes;
    sp->nfiles--;
    /* The replayer only ever takes the oldest segment. */
    if (sp->nsegs && sp->segs[0] == sp->cur_seq) {
        memmove(sp->segs, sp->segs + 1, (sp->nsegs - 1) * sizeof *sp->segs);
        sp->nsegs--;
    }
    pthread_mutex_unlock(&sp->mu);
    free(sp->cur);
    sp->cur = NULL;
    sp->cur_len = sp->cur_off = 0;
    sp->loaded = 0;
    sp->have_rec = 0;
}

static int read_all(const char *path, uint8_t **buf, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fm_fail(FM_EIO, "spool: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return fm_fail(FM_EIO, "spool: %s: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return fm_fail(FM_ENOMEM, "spool: out of memory for %s (%zu bytes)", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = got; /* a shorter file than fstat said is read as it is */
    return 0;
}

/* Loads the oldest sealed segment and the progress recorded for it.
 * Returns 1 when one is loaded, 0 when there is none. */
static int load_segment(fm_spool_t *sp) {
    pthread_mutex_lock(&sp->mu);
    int have = sp->nsegs > 0;
    uint64_t seq = have ? sp->segs[0] : 0;
    pthread_mutex_unlock(&sp->mu);
    if (!have)
        return 0;
    char path[600];
    seg_path(sp, seq, "spool", path, sizeof path);
    int rc = read_all(path, &sp->cur, &sp->cur_len);
    if (rc)
        return rc;
    sp->cur_seq = seq;
    sp->loaded = 1;
    sp->have_rec = 0;
    sp->cur_off = SEG_HEADER;
    if (sp->cur_len < SEG_HEADER || memcmp(sp->cur, SEG_MAGIC, 8) != 0 || get_u32(sp->cur + 8) != SEG_VERSION) {
        /* A segment cut before its header was written (a crash right after
         * it was created) holds nothing; anything else is not ours. */
        if (sp->cur_len > SEG_HEADER) {
            fm_error("spool", "%s: not a version-%u spool segment; skipping its %zu bytes", path, SEG_VERSION,
                     sp->cur_len);
            pthread_mutex_lock(&sp->mu);
            sp->st.damaged++;
            sp->st.damaged_bytes += sp->cur_len;
            pthread_mutex_unlock(&sp->mu);
        }
        sp->cur_off = sp->cur_len;
        return 1;
    }
    seg_path(sp, seq, "done", path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        uint8_t d[12];
        if (read(fd, d, sizeof d) == (ssize_t)sizeof d && fm_crc32c(0, d, 8) == get_u32(d + 8)) {
            uint64_t off = (uint64_t)get_u32(d) | (uint64_t)get_u32(d + 4) << 32;
            if (off >= SEG_HEADER && off <= sp->cur_len)
                sp->cur_off = (size_t)off;
        }
        close(fd);
    }
    return 1;
}

/* 1 when a whole, intact record starts at `off`. */
static int record_at(const fm_spool_t *sp, size_t off, uint32_t *len) {
    if (sp->cur_len - off < FM_SPOOL_RECORD_HEADER)
        return 0;
    const uint8_t *h = sp->cur + off;
    if (get_u32(h) != REC_MAGIC)
        return 0;
    uint32_t n = get_u32(h + 8);
    if (n > FM_SPOOL_MAX_PAYLOAD || n > sp->cur_len - off - FM_SPOOL_RECORD_HEADER)
        return 0;
    if (record_crc(h, h + FM_SPOOL_RECORD_HEADER, n) != get_u32(h + 12))
        return 0;
    *len = n;
    return 1;
}

int fm_spool_next(fm_spool_t *sp, fm_spool_record_t *rec) {
    for (;;) {
        if (sp->have_rec) { /* not acknowledged yet: the same record again */
            *rec = sp->rec;
            return 1;
        }
        if (!sp->loaded) {
            int rc = load_segment(sp);
            if (rc < 0) {
                /* Unreadable (an I/O error, no memory): set it aside so that
                 * the segments after it still replay. */
                char detail[600], path[600], bad[620];
                snprintf(detail, sizeof detail, "%s", fm_last_error());
                pthread_mutex_lock(&sp->mu);
                uint64_t seq = sp->segs[0];
                memmove(sp->segs, sp->segs + 1, (sp->nsegs - 1) * sizeof *sp->segs);
                sp->nsegs--;
                sp->nfiles--;
                sp->st.damaged++;
                pthread_mutex_unlock(&sp->mu);
                seg_path(sp, seq, "spool", path, sizeof path);
                snprintf(bad, sizeof bad, "%s.unreadable", path);
                rename(path, bad);
                fm_error("spool", "%s; set aside as %s", detail, bad);
                return fm_fail(rc, "%s", detail);
            }
            if (rc == 0)
                return 0;
        }
        if (sp->cur_off >= sp->cur_len) {
            finish_segment(sp);
            continue;
        }
        uint32_t len;
        if (!record_at(sp, sp->cur_off, &len)) {
            /* Torn (a crash mid-write leaves a short tail) or damaged: find
             * the next intact record, if any, and go on from there. */
            size_t from = sp->cur_off, off = from + 1;
            while (off < sp->cur_len && !record_at(sp, off, &len))
                off++;
            pthread_mutex_lock(&sp->mu);
            sp->st.damaged++;
            sp->st.damaged_bytes += off - from;
            pthread_mutex_unlock(&sp->mu);
            fm_warn("spool", "segment %016" PRIx64 ": %zu bytes at offset %zu are a torn or damaged record; %s",
                    sp->cur_seq, off - from, from,
                    off < sp->cur_len ? "skipped to the next intact record" : "skipped (end of the segment)");
            sp->cur_off = off;
            continue;
        }
        const uint8_t *h = sp->cur + sp->cur_off;
        sp->rec.type = get_u32(h + 4);
        memcpy(sp->rec.id, h + 16, 16);
        sp->rec.payload = h + FM_SPOOL_RECORD_HEADER;
        sp->rec.len = len;
        sp->rec.segment = sp->cur_seq;
        sp->rec.next_offset = sp->cur_off + FM_SPOOL_RECORD_HEADER + len;
        sp->have_rec = 1;
        *rec = sp->rec;
        return 1;
    }
}

int fm_spool_ack(fm_spool_t *sp, const fm_spool_record_t *rec) {
    if (!sp->have_rec || rec->segment != sp->cur_seq || rec->next_offset != sp->rec.next_offset)
        return fm_fail(FM_EINVAL, "spool: acknowledging a record that is not the current one");
    sp->have_rec = 0;
    sp->cur_off = (size_t)rec->next_offset;
    if (sp->cur_off >= sp->cur_len) {
        finish_segment(sp);
        return 0;
    }
    /* Progress survives a restart of the process (page cache), which is
     * what it is for; ids cover the rest. */
    char path[600];
    seg_path(sp, sp->cur_seq, "done", path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return 0;
    uint8_t d[12];
    uint64_t off = sp->cur_off;
    put_u32(d, (uint32_t)off);
    put_u32(d + 4, (uint32_t)(off >> 32));
    put_u32(d + 8, fm_crc32c(0, d, 8));
    if (pwrite(fd, d, sizeof d, 0) != (ssize_t)sizeof d)
        fm_debug("spool", "cannot record the replay progress: %s", strerror(errno));
    close(fd);
    return 0;
}
