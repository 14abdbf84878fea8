/* test_spool.c: the prediction log's spool and batch codec on real files:
 * records come back in order and byte for byte across a reopen; progress
 * survives a restart; a torn tail (a crash mid-write) and damage in the
 * middle are detected by the checksum and skipped, and the records after
 * the damage still replay; the size limit refuses appends, counted; a
 * second process cannot take the same directory; the codec round-trips
 * predictions, feedback and rollup deltas; CRC-32C matches its test vector. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_log_codec.h"
#include "fm_spool.h"
#include "fm_test.h"
#include "fm_uuid.h"

static char *fresh_dir(const char *name) {
    char *d = fm_test_path(fm_test_tmpdir(), name);
    return d;
}

/* Payload k: k+1 bytes of a pattern, so that every record differs. */
static size_t payload(int k, uint8_t *buf) {
    size_t n = (size_t)(k * 37 % 5000) + 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(k * 7 + i * 13);
    return n;
}

static void id_of(int k, uint8_t id[16]) { fm_uuid7_make(1767225600000LL + k, (uint16_t)k, (uint64_t)k, id); }

/* Replays everything; returns how many records came back, checking each
 * against payload(first + i). */
static int replay_all(fm_spool_t *sp, int first, int ack) {
    uint8_t want[6000], wid[16];
    fm_spool_record_t rec;
    int n = 0, rc;
    while ((rc = fm_spool_next(sp, &rec)) == 1) {
        int k = first + n;
        size_t len = payload(k, want);
        id_of(k, wid);
        if (rec.type != (uint32_t)(k % 3 + 1) || rec.len != len || memcmp(rec.payload, want, len) != 0 ||
            memcmp(rec.id, wid, 16) != 0) {
            FM_TEST_FAIL_AT("record %d: type %u len %zu differs from what was appended", k, rec.type, rec.len);
            return -1;
        }
        n++;
        if (ack)
            FM_CHECK_OK(fm_spool_ack(sp, &rec));
        else
            break;
    }
    FM_CHECK(rc >= 0);
    return n;
}

static void append_range(fm_spool_t *sp, int from, int to) {
    uint8_t buf[6000], id[16];
    for (int k = from; k < to; k++) {
        size_t len = payload(k, buf);
        id_of(k, id);
        FM_CHECK_OK(fm_spool_append(sp, (uint32_t)(k % 3 + 1), id, buf, len));
    }
}

static void test_crc32c_vector(void) {
    /* The check value of CRC-32C (RFC 3720, B.4). */
    FM_CHECK_EQ(fm_crc32c(0, "123456789", 9), 0xe3069283u);
    uint8_t zeros[32] = {0};
    FM_CHECK_EQ(fm_crc32c(0, zeros, 32), 0x8a9136aau);
}

static void test_append_replay_reopen(void) {
    char *dir = fresh_dir("spool-basic");
    fm_spool_t *sp;
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    FM_CHECK(!fm_spool_has_records(sp));
    append_range(sp, 0, 500);
    FM_CHECK(fm_spool_has_records(sp));
    /* Nothing sealed yet: the replayer sees nothing until a seal. */
    fm_spool_record_t rec;
    FM_CHECK_EQ(fm_spool_next(sp, &rec), 0);
    FM_CHECK_OK(fm_spool_seal(sp));
    /* An unacknowledged record comes back again. */
    FM_CHECK_EQ(replay_all(sp, 0, 0), 1);
    FM_CHECK_EQ(replay_all(sp, 0, 0), 1);
    /* Replay 200, then "crash" (close without acknowledging more). */
    uint8_t want[6000];
    for (int k = 0; k < 200; k++) {
        FM_REQUIRE(fm_spool_next(sp, &rec) == 1);
        FM_CHECK_EQ(rec.len, payload(k, want));
        FM_CHECK_OK(fm_spool_ack(sp, &rec));
    }
    append_range(sp, 500, 600); /* a new segment, after the sealed one */
    fm_spool_close(sp);
    /* The next run starts at record 200 of the old segment, then the new one. */
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    FM_CHECK_EQ(replay_all(sp, 200, 1), 400);
    fm_spool_stats_t st;
    fm_spool_get_stats(sp, &st);
    FM_CHECK_EQ(st.segments, 0); /* every replayed segment is deleted */
    FM_CHECK_EQ(st.bytes, 0);
    FM_CHECK_EQ(st.damaged, 0);
    FM_CHECK(!fm_spool_has_records(sp));
    fm_spool_close(sp);
    free(dir);
}

static void test_segments_rotate(void) {
    char *dir = fresh_dir("spool-rotate");
    fm_spool_t *sp;
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    /* 40 records of 1 MB: three segments of at most 16 MiB. */
    uint8_t *big = malloc(1 << 20);
    FM_REQUIRE(big);
    uint8_t id[16] = {0};
    for (int k = 0; k < 40; k++) {
        memset(big, k, 1 << 20);
        id[0] = (uint8_t)k;
        FM_CHECK_OK(fm_spool_append(sp, 1, id, big, 1 << 20));
    }
    fm_spool_stats_t st;
    fm_spool_get_stats(sp, &st);
    FM_CHECK_EQ(st.segments, 3);
    FM_CHECK_OK(fm_spool_seal(sp));
    fm_spool_record_t rec;
    for (int k = 0; k < 40; k++) {
        FM_REQUIRE(fm_spool_next(sp, &rec) == 1);
        FM_CHECK_EQ(rec.id[0], k);
        FM_CHECK(rec.len == (1u << 20) && rec.payload[12345] == (uint8_t)k);
        FM_CHECK_OK(fm_spool_ack(sp, &rec));
    }
    FM_CHECK_EQ(fm_spool_next(sp, &rec), 0);
    free(big);
    fm_spool_close(sp);
    free(dir);
}

/* The one segment file in dir. */
static char *segment_path(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s/*.spool 2>/dev/null | head -1", dir);
    FILE *p = popen(cmd, "r");
    static char path[600];
    path[0] = '\0';
    if (p) {
        if (!fgets(path, sizeof path, p))
            path[0] = '\0';
        pclose(p);
    }
    path[strcspn(path, "\n")] = '\0';
    return path;
}

static void test_torn_tail(void) {
    char *dir = fresh_dir("spool-torn");
    fm_spool_t *sp;
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    append_range(sp, 0, 50);
    fm_spool_close(sp);
    /* A crash in the middle of the 50th record's write: the file ends 10
     * bytes into its payload, or inside its header. */
    uint8_t buf[6000];
    for (int cut = 0; cut < 2; cut++) {
        if (cut == 1) {
            FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
            append_range(sp, 0, 50);
            fm_spool_close(sp);
        }
        const char *path = segment_path(dir);
        FM_REQUIRE(path[0]);
        struct stat st;
        FM_REQUIRE(stat(path, &st) == 0);
        size_t last = FM_SPOOL_RECORD_HEADER + payload(49, buf);
        off_t keep = st.st_size - (off_t)last + (cut == 0 ? FM_SPOOL_RECORD_HEADER + 10 : 7);
        FM_REQUIRE(truncate(path, keep) == 0);
        FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
        FM_CHECK_EQ(replay_all(sp, 0, 1), 49);
        fm_spool_stats_t s;
        fm_spool_get_stats(sp, &s);
        FM_CHECK_EQ(s.damaged, 1);
        FM_CHECK_EQ(s.damaged_bytes, cut == 0 ? FM_SPOOL_RECORD_HEADER + 10 : 7);
        FM_CHECK_EQ(s.segments, 0);
        /* The spool goes on working after the damage. */
        append_range(sp, 0, 3);
        FM_CHECK_OK(fm_spool_seal(sp));
        FM_CHECK_EQ(replay_all(sp, 0, 1), 3);
        fm_spool_close(sp);
    }
    free(dir);
}

static void test_damage_in_the_middle(void) {
    char *dir = fresh_dir("spool-damage");
    fm_spool_t *sp;
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    append_range(sp, 0, 30);
    fm_spool_close(sp);
    /* Flip one byte inside record 10's payload: its checksum fails, and
     * replay resumes at record 11. */
    const char *path = segment_path(dir);
    uint8_t buf[6000];
    off_t off = 16;
    for (int k = 0; k < 10; k++)
        off += (off_t)(FM_SPOOL_RECORD_HEADER + payload(k, buf));
    int fd = open(path, O_RDWR);
    FM_REQUIRE(fd >= 0);
    uint8_t b;
    FM_REQUIRE(pread(fd, &b, 1, off + FM_SPOOL_RECORD_HEADER) == 1);
    b ^= 0x40;
    FM_REQUIRE(pwrite(fd, &b, 1, off + FM_SPOOL_RECORD_HEADER) == 1);
    close(fd);
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    fm_spool_record_t rec;
    int got[30], n = 0;
    while (fm_spool_next(sp, &rec) == 1 && n < 30) {
        got[n++] = rec.id[15] | rec.id[14] << 8; /* rand_b low bits hold k */
        FM_CHECK_OK(fm_spool_ack(sp, &rec));
    }
    FM_CHECK_EQ(n, 29);
    for (int i = 0; i < n; i++)
        FM_CHECK_EQ(got[i], i < 10 ? i : i + 1);
    fm_spool_stats_t s;
    fm_spool_get_stats(sp, &s);
    FM_CHECK_EQ(s.damaged, 1);
    FM_CHECK_EQ(s.damaged_bytes, FM_SPOOL_RECORD_HEADER + payload(10, buf));
    fm_spool_close(sp);
    free(dir);
}

static void test_size_limit(void) {
    char *dir = fresh_dir("spool-full");
    fm_spool_t *sp;
    FM_REQUIRE_OK(fm_spool_open(dir, 100000, &sp));
    uint8_t buf[10000] = {1}, id[16] = {0};
    int ok = 0, full = 0;
    for (int k = 0; k < 20; k++) {
        int rc = fm_spool_append(sp, 1, id, buf, sizeof buf);
        if (rc == 0)
            ok++;
        else if (rc == FM_EOVERLOADED)
            full++;
    }
    FM_CHECK_EQ(ok, 9); /* 16 + 9 x 10032 bytes fit in 100,000 */
    FM_CHECK_EQ(full, 11);
    FM_CHECK_CONTAINS(fm_last_error(), "is full");
    fm_spool_stats_t s;
    fm_spool_get_stats(sp, &s);
    FM_CHECK_EQ(s.refused_full, 11);
    FM_CHECK(s.bytes <= 100000);
    /* Replaying frees the room again. */
    FM_CHECK_OK(fm_spool_seal(sp));
    fm_spool_record_t rec;
    while (fm_spool_next(sp, &rec) == 1)
        FM_CHECK_OK(fm_spool_ack(sp, &rec));
    FM_CHECK_OK(fm_spool_append(sp, 1, id, buf, sizeof buf));
    fm_spool_close(sp);
    free(dir);
}

static void test_one_process_per_directory(void) {
    char *dir = fresh_dir("spool-lock");
    fm_spool_t *sp;
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fm_spool_t *other;
        int rc = fm_spool_open(dir, 0, &other);
        _exit(rc == FM_EUNAVAILABLE && strstr(fm_last_error(), "in use by another process") ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    FM_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    fm_spool_close(sp);
    /* Released at close (and by the kernel when a process dies). */
    FM_REQUIRE_OK(fm_spool_open(dir, 0, &sp));
    fm_spool_close(sp);
    free(dir);
}

static void test_codec_predictions(void) {
    float probs[3 * 10], conf[3];
    int32_t labels[3] = {7, 0, 9};
    uint8_t pixels[3 * 784];
    for (int i = 0; i < 3 * 784; i++)
        pixels[i] = (uint8_t)(i * 31);
    for (int i = 0; i < 30; i++)
        probs[i] = (float)i / 435.0f;
    for (int i = 0; i < 3; i++)
        conf[i] = probs[i * 10 + labels[i]];
    fm_prediction_t p = {.request_id = "01234567-89ab-7def-8123-456789abcdef", .received_wall_us = 1767225600123456,
                         .role = "canary", .model_version = "v2", .routing = "sticky", .n = 3, .labels = labels,
                         .confidence = conf, .probs = probs, .queue_us = 12, .compute_us = 345, .total_us = 678,
                         .pixels = pixels};
    uint8_t id[16];
    FM_REQUIRE_OK(fm_uuid_parse(p.request_id, id));
    uint8_t sampled[2] = {1, 0}, buf[8192];
    /* Images 1 and 2 (image 1 sampled), then image 0 alone. */
    size_t len = fm_logc_put_request(buf, &p, id, FM_ROLE_CANARY, FM_ROUTE_STICKY, 1, 2, sampled);
    FM_CHECK_EQ(len, fm_logc_request_bytes(&p, 2, 1));
    uint8_t none = 0;
    len += fm_logc_put_request(buf + len, &p, id, FM_ROLE_CANARY, FM_ROUTE_STICKY, 0, 1, &none);
    fm_logc_rows_t r = {0};
    FM_REQUIRE_OK(fm_logc_decode_predictions(buf, len, &r));
    FM_REQUIRE(r.n == 3);
    FM_CHECK_EQ(r.sampled, 1);
    int order[3] = {1, 2, 0};
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        const fm_prediction_row_t *x = &r.rows[k];
        FM_CHECK(memcmp(x->request_id, id, 16) == 0);
        FM_CHECK_EQ(x->image_index, i);
        FM_CHECK_EQ(x->ts_us, p.received_wall_us);
        FM_CHECK_EQ(x->role, FM_ROLE_CANARY);
        FM_CHECK_EQ(x->route, FM_ROUTE_STICKY);
        FM_CHECK_STR(x->model_version, "v2");
        FM_CHECK_EQ(x->label, labels[i]);
        FM_CHECK(x->confidence == conf[i]);
        FM_CHECK(memcmp(x->probs, probs + i * 10, 40) == 0);
        FM_CHECK_EQ(x->queue_us, 12);
        FM_CHECK_EQ(x->compute_us, 345);
        FM_CHECK_EQ(x->total_us, 678);
        FM_CHECK((r.images[k] != NULL) == (i == 1));
    }
    FM_CHECK(memcmp(r.images[0], pixels + 784, 784) == 0);
    /* A cut batch is refused, not read past its end. */
    FM_CHECK_ERR(fm_logc_decode_predictions(buf, len - 1, &r), FM_EFORMAT);
    FM_CHECK_ERR(fm_logc_decode_predictions(buf, 20, &r), FM_EFORMAT);
    fm_logc_rows_free(&r);
}

static void test_codec_feedback_and_delta(void) {
    fm_feedback_row_t in[3] = {{.image_index = 0, .label = 3, .received_us = 1, .source = "app"},
                               {.image_index = 32767, .label = 9, .received_us = -5, .source = NULL},
                               {.image_index = 5, .label = 0, .received_us = 1767225600000000, .source = ""}};
    uint8_t buf[1024];
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        fm_uuid7_make(1000 + i, 1, 2, in[i].request_id);
        len += fm_logc_put_feedback(buf + len, &in[i]);
    }
    fm_feedback_row_t *out;
    size_t n;
    char *strings;
    FM_REQUIRE_OK(fm_logc_decode_feedback(buf, len, &out, &n, &strings));
    FM_REQUIRE(n == 3);
    for (int i = 0; i < 3; i++) {
        FM_CHECK(memcmp(out[i].request_id, in[i].request_id, 16) == 0);
        FM_CHECK_EQ(out[i].image_index, in[i].image_index);
        FM_CHECK_EQ(out[i].label, in[i].label);
        FM_CHECK_EQ(out[i].received_us, in[i].received_us);
        FM_CHECK((out[i].source == NULL) == (in[i].source == NULL));
        if (in[i].source)
            FM_CHECK_STR(out[i].source, in[i].source);
    }
    free(out);
    free(strings);
    FM_CHECK_ERR(fm_logc_decode_feedback(buf, len - 1, &out, &n, &strings), FM_EFORMAT);

    fm_pixel_hist_t *h = fm_pixel_hist_new(), *h2 = fm_pixel_hist_new();
    fm_pred_hist_t ph = {0}, ph2 = {0};
    FM_REQUIRE(h && h2);
    uint8_t img[784];
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 784; i++)
            img[i] = (uint8_t)(i * k);
        fm_pixel_hist_add(h, img, 1);
        ph.predictions++;
        ph.classes[k]++;
        ph.conf[fm_confidence_q(0.1f * (float)k)]++;
    }
    size_t dl;
    uint8_t *d = fm_logc_encode_delta(1767225600000000, "v7", h, &ph, &dl);
    FM_REQUIRE(d);
    int64_t b;
    char version[128];
    FM_REQUIRE_OK(fm_logc_decode_delta(d, dl, &b, version, h2, &ph2));
    FM_CHECK_EQ(b, 1767225600000000);
    FM_CHECK_STR(version, "v7");
    FM_CHECK(memcmp(h, h2, sizeof *h) == 0);
    FM_CHECK(memcmp(&ph, &ph2, sizeof ph) == 0);
    FM_CHECK_ERR(fm_logc_decode_delta(d, dl - 1, &b, version, h2, &ph2), FM_EFORMAT);
    free(d);
    fm_pixel_hist_free(h);
    fm_pixel_hist_free(h2);
}

static void test_uuid(void) {
    uint8_t id[16], back[16];
    fm_uuid7_make(0x0123456789abLL, 0xcde, 0x3f0123456789abcdULL, id);
    char t[37];
    fm_uuid_format(id, t);
    FM_CHECK_STR(t, "01234567-89ab-7cde-bf01-23456789abcd");
    FM_CHECK_EQ(fm_uuid_version(id), 7);
    FM_CHECK_EQ(fm_uuid7_ms(id), 0x0123456789abLL);
    FM_CHECK_OK(fm_uuid_parse("01234567-89AB-7CDE-BF01-23456789ABCD", back));
    FM_CHECK(memcmp(id, back, 16) == 0);
    FM_CHECK_ERR(fm_uuid_parse("01234567-89ab-7cde-bf01-23456789abc", back), FM_EINVAL);
    FM_CHECK_ERR(fm_uuid_parse("01234567x89ab-7cde-bf01-23456789abcd", back), FM_EINVAL);
    FM_CHECK_ERR(fm_uuid_parse("01234567-89ab-7cde-bf01-23456789abcg", back), FM_EINVAL);
    /* One thread's ids increase, also within a millisecond. */
    uint8_t prev[16] = {0};
    for (int i = 0; i < 10000; i++) {
        fm_uuid7_new(id);
        FM_CHECK_EQ(fm_uuid_version(id), 7);
        if (memcmp(id, prev, 16) <= 0) {
            FM_TEST_FAIL_AT("id %d does not increase", i);
            break;
        }
        memcpy(prev, id, 16);
    }
}

FM_TEST_MAIN({"crc32c_vector", test_crc32c_vector}, {"append_replay_reopen", test_append_replay_reopen},
             {"segments_rotate", test_segments_rotate}, {"torn_tail", test_torn_tail},
             {"damage_in_the_middle", test_damage_in_the_middle}, {"size_limit", test_size_limit},
             {"one_process_per_directory", test_one_process_per_directory},
             {"codec_predictions", test_codec_predictions},
             {"codec_feedback_and_delta", test_codec_feedback_and_delta}, {"uuid", test_uuid})
