/* cmd_predict.c: `fmctl predict`: classify images with a running fmserve.
 * One-shot mode prints each image's class and confidence (images from an
 * IDX file, a labelled set, or PNG files); --stream pushes a labelled set
 * through several pipelined connections and prints accuracy and latency per
 * model version and the overall throughput. */
#include <getopt.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "fm_aclient.h"
#include "fm_cli.h"
#include "fm_client.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_time.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: fmctl predict [--server HOST:PORT] [--version V] [--key K] [--probs] [--limit N] [--batch N]\n"
            "                     (--images FILE | --data DIR [--split t10k|train] | FILE.png ...)\n"
            "       fmctl predict --stream [--data DIR] [--split t10k|train] [--connections N] [--batch N]\n"
            "                     [--depth N] [--limit N] [--version V] [--server HOST:PORT] [--feedback SHARE]\n"
            "  Classifies images with a running fmserve and prints class and confidence per image.\n"
            "  --server HOST:PORT  the server (default $FM_SERVER, else 127.0.0.1:7070)\n"
            "  --images FILE       an IDX images file (raw or gzipped)\n"
            "  --data DIR          a labelled set: DIR/<split>-images-idx3-ubyte[.gz] and labels (default $FM_DATA);\n"
            "                      also prints the true class and the accuracy\n"
            "  FILE.png ...        28x28 images (colour is converted to grey)\n"
            "  --version V         pin a version: stable, canary or a version id such as v2\n"
            "  --key K             sticky routing key (the same key always reaches the same version)\n"
            "  --probs             also print the 10 class probabilities\n"
            "  --limit N           use the first N images only\n"
            "  --batch N           images per request (default 64; 16 with --stream)\n"
            "  --stream            stream the labelled set through --connections connections, each with\n"
            "                      --depth requests in flight, and print per-version accuracy, latency\n"
            "                      percentiles and throughput (defaults: 4 connections, depth 8)\n"
            "  --feedback SHARE    with --stream: also send the true label of this share (0..1) of the images\n"
            "                      back with the feedback method, as a client that learns the truth later would\n"
            "                      (the server must log to PostgreSQL; see `fmctl db accuracy`)\n"
            "  The token for a server with FM_AUTH_TOKEN set comes from $FM_AUTH_TOKEN.\n");
}

typedef struct options {
    char host[256];
    int port;
    const char *version, *key, *images, *data, *split;
    int probs, stream, connections, depth;
    size_t limit, batch;
    const char *token;
    double feedback; /* share of streamed images whose true label is sent back */
} options_t;

/* ---- Input ------------------------------------------------------------- */

static int load_png(const char *path, uint8_t *out) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return fm_fail(FM_EFORMAT, "%s: not a readable PNG: %s", path, img.message);
    if (img.width != 28 || img.height != 28) {
        png_image_free(&img);
        return fm_fail(FM_ESHAPE, "%s: %ux%u pixels; fmserve classifies 28x28 images", path, img.width, img.height);
    }
    img.format = PNG_FORMAT_GRAY; /* libpng converts colour, palette, alpha and 16-bit */
    if (!png_image_finish_read(&img, NULL, out, 28, NULL)) {
        png_image_free(&img);
        return fm_fail(FM_EFORMAT, "%s: %s", path, img.message);
    }
    return 0;
}

/* Fills `ds` from the options: labelled set, IDX file, or PNG files. */
static int load_input(const options_t *o, int argc, char **argv, fm_dataset_t *ds, int *labelled) {
    memset(ds, 0, sizeof *ds);
    *labelled = 0;
    if (argc > 0) {
        ds->n = (size_t)argc;
        ds->images = malloc(ds->n * 784);
        if (!ds->images)
            return fm_fail(FM_ENOMEM, "images");
        for (int i = 0; i < argc; i++) {
            int rc = load_png(argv[i], ds->images + (size_t)i * 784);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (o->images)
        return fm_dataset_load_images(o->images, ds);
    const char *dir = fm_data_dir(o->data);
    if (!dir)
        return FM_EINVAL;
    int rc = fm_dataset_load(dir, o->split, ds);
    if (rc == 0)
        *labelled = 1;
    return rc;
}

/* ---- One-shot mode ----------------------------------------------------------- */

static int run_once(const options_t *o, const fm_dataset_t *ds, size_t n, int labelled, char **names) {
    fm_client_t *c;
    if (fm_client_connect(o->host, o->port, 30000, &c) != 0)
        return fm_cli_fail("predict");
    fm_proto_error_t err;
    if (o->token && fm_client_auth(c, o->token, &err) != 0) {
        fm_client_close(c);
        return fm_cli_fail("predict: auth");
    }
    int32_t *labels = malloc(o->batch * sizeof *labels);
    float *conf = malloc(o->batch * sizeof *conf), *probs = malloc(o->batch * 10 * sizeof *probs);
    fm_predict_opts_t po = {.version = o->version, .key = o->key, .probs = o->probs};
    size_t correct = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += o->batch) {
        size_t k = n - i < o->batch ? n - i : o->batch;
        fm_predict_result_t r = {.labels = labels, .confidence = conf, .probs = probs};
        if (fm_client_predict(c, ds->images + i * 784, k, &po, &r, &err) != 0) {
            rc = fm_cli_fail("predict");
            break;
        }
        for (size_t j = 0; j < r.n; j++) {
            int32_t l = labels[j];
            char name[64];
            if (names)
                snprintf(name, sizeof name, "%s", names[i + j]);
            else
                snprintf(name, sizeof name, "%zu", i + j);
            printf("%-16s %d %-12s %.4f  %s %s", name, l, fm_class_names[l], conf[j], r.model, r.model_version);
            if (labelled) {
                int ok = (uint8_t)l == ds->labels[i + j];
                correct += (size_t)ok;
                printf("  true %-12s %s", fm_class_names[ds->labels[i + j]], ok ? "ok" : "WRONG");
            }
            if (r.have_probs) {
                printf("  probs");
                for (int q = 0; q < 10; q++)
                    printf(" %.4f", probs[j * 10 + (size_t)q]);
            }
            printf("\n");
        }
    }
    if (rc == 0 && labelled)
        printf("accuracy %.4f (%zu of %zu)\n", (double)correct / (double)n, correct, n);
    free(labels);
    free(conf);
    free(probs);
    fm_client_close(c);
    return rc;
}

/* ---- Streaming mode ------------------------------------------------------------ */

typedef struct vstats {
    char version[64], role[16];
    size_t images, correct, requests;
    double *lat; /* ms per request */
    size_t nlat, cap;
} vstats_t;

typedef struct stream stream_t;
typedef struct sconn {
    stream_t *st;
    fm_aclient_t *c;
} sconn_t;

struct stream {
    const options_t *o;
    const fm_dataset_t *ds;
    size_t n, next, done;
    sconn_t *conns;
    int nconns, open;
    vstats_t v[4];
    int nv;
    size_t errors;
    size_t feedback_sent, feedback_errors;
    char first_error[320];
};

typedef struct sreq {
    sconn_t *sc;
    size_t first, count;
} sreq_t;

static vstats_t *vslot(stream_t *st, const char *version, const char *role) {
    for (int i = 0; i < st->nv; i++)
        if (!strcmp(st->v[i].version, version))
            return &st->v[i];
    if (st->nv == 4)
        return &st->v[3];
    vstats_t *v = &st->v[st->nv++];
    memset(v, 0, sizeof *v);
    snprintf(v->version, sizeof v->version, "%s", version);
    snprintf(v->role, sizeof v->role, "%s", role);
    return v;
}

static void stream_send(sconn_t *sc);
static void stream_close_conn(sconn_t *sc);

static void on_feedback_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                              uint64_t latency_us, void *user) {
    sconn_t *sc = user;
    stream_t *st = sc->st;
    (void)result;
    (void)latency_us;
    if (status != 0 || error) {
        if (!st->feedback_errors && error) {
            fm_proto_error_t e;
            fm_proto_read_error(error, &e);
            fprintf(stderr, "fmctl predict: feedback refused: %s: %s\n", e.code, e.message);
        }
        st->feedback_errors++;
    }
    if (status != 0)
        return;
    /* Feedback calls share the in-flight window with the predicts. */
    stream_send(sc);
    if (st->next >= st->n && fm_aclient_inflight(c) == 0)
        stream_close_conn(sc);
}

/* Sends the true label of image `idx` (position k of the request that got
 * `request_id`) when it falls in the feedback share. */
static void maybe_feedback(sconn_t *sc, const char *request_id, size_t idx, uint32_t k) {
    stream_t *st = sc->st;
    double share = st->o->feedback;
    /* Every image whose running share crosses an integer: exact and
     * deterministic, no random generator needed. */
    if (share <= 0 || (uint64_t)((double)(idx + 1) * share) == (uint64_t)((double)idx * share))
        return;
    fm_mp_buf_t p;
    fm_mp_buf_init(&p);
    fm_mp_pack_array(&p, 1);
    fm_mp_pack_map(&p, 4);
    fm_mp_pack_key(&p, "request_id");
    fm_mp_pack_cstr(&p, request_id);
    fm_mp_pack_key(&p, "image_index");
    fm_mp_pack_uint(&p, k);
    fm_mp_pack_key(&p, "label");
    fm_mp_pack_uint(&p, st->ds->labels[idx]);
    fm_mp_pack_key(&p, "source");
    fm_mp_pack_cstr(&p, "fmctl-predict");
    if (fm_aclient_call(sc->c, "feedback", &p, on_feedback_reply, sc) == 0)
        st->feedback_sent++;
    else
        st->feedback_errors++;
    fm_mp_buf_free(&p);
}

static void stream_close_conn(sconn_t *sc) {
    if (sc->c) {
        fm_aclient_close(sc->c, NULL, NULL);
        sc->c = NULL;
        sc->st->open--;
    }
}

static void on_stream_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                            uint64_t latency_us, void *user) {
    sreq_t *q = user;
    sconn_t *sc = q->sc;
    stream_t *st = sc->st;
    (void)c;
    if (status != 0 || error) {
        if (!st->errors) {
            if (error) {
                fm_proto_error_t e;
                fm_proto_read_error(error, &e);
                snprintf(st->first_error, sizeof st->first_error, "%s: %s", e.code, e.message);
            } else {
                snprintf(st->first_error, sizeof st->first_error, "%s", fm_last_error());
            }
        }
        st->errors++;
    } else {
        char version[64] = "?", role[16] = "?";
        fm_mp_copy_str(fm_mp_map_get(result, "model_version"), version, sizeof version);
        fm_mp_copy_str(fm_mp_map_get(result, "model"), role, sizeof role);
        vstats_t *v = vslot(st, version, role);
        const fm_mp_obj_t *preds = fm_mp_map_get(result, "predictions");
        char request_id[40] = "";
        fm_mp_copy_str(fm_mp_map_get(result, "request_id"), request_id, sizeof request_id);
        for (uint32_t i = 0; i < fm_mp_len(preds) && i < q->count; i++) {
            uint64_t label = 99;
            fm_mp_get_u64(fm_mp_map_get(fm_mp_at(preds, i), "label"), &label);
            v->correct += label == st->ds->labels[q->first + i];
            if (sc->c && request_id[0])
                maybe_feedback(sc, request_id, q->first + i, i);
        }
        v->images += fm_mp_len(preds);
        v->requests++;
        if (v->nlat == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 1024;
            v->lat = realloc(v->lat, v->cap * sizeof *v->lat);
        }
        v->lat[v->nlat++] = (double)latency_us / 1000.0;
    }
    st->done += q->count;
    free(q);
    if (status != 0) {
        stream_close_conn(sc);
        return;
    }
    stream_send(sc);
    if (st->next >= st->n && fm_aclient_inflight(sc->c) == 0)
        stream_close_conn(sc);
}

static void stream_send(sconn_t *sc) {
    stream_t *st = sc->st;
    const options_t *o = st->o;
    while (st->next < st->n && fm_aclient_inflight(sc->c) < (size_t)o->depth) {
        sreq_t *q = malloc(sizeof *q);
        q->sc = sc;
        q->first = st->next;
        q->count = st->n - st->next < o->batch ? st->n - st->next : o->batch;
        st->next += q->count;
        fm_predict_opts_t po = {.version = o->version, .key = o->key};
        if (fm_aclient_predict(sc->c, st->ds->images + q->first * 784, q->count, &po, on_stream_reply, q) != 0) {
            st->errors++;
            free(q);
            return;
        }
    }
}

static void on_auth_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                          uint64_t latency_us, void *user) {
    sconn_t *sc = user;
    (void)c;
    (void)result;
    (void)latency_us;
    if (status == 0 && error) {
        fm_proto_error_t e;
        fm_proto_read_error(error, &e);
        if (!sc->st->errors)
            snprintf(sc->st->first_error, sizeof sc->st->first_error, "auth: %s: %s", e.code, e.message);
        sc->st->errors++;
    }
}

static void on_stream_connect(fm_aclient_t *c, int status, void *user) {
    sconn_t *sc = user;
    if (status != 0) {
        sc->st->errors++;
        snprintf(sc->st->first_error, sizeof sc->st->first_error, "%s", fm_last_error());
        sc->st->open--;
        return;
    }
    sc->c = c;
    if (sc->st->o->token) {
        fm_mp_buf_t p;
        fm_mp_buf_init(&p);
        fm_mp_pack_array(&p, 1);
        fm_mp_pack_cstr(&p, sc->st->o->token);
        /* Frames on a connection are handled in order, so the predicts
         * queued behind auth are already authenticated. */
        fm_aclient_call(c, "auth", &p, on_auth_reply, sc);
        fm_mp_buf_free(&p);
    }
    stream_send(sc);
    if (fm_aclient_inflight(c) == 0) /* nothing left for this connection */
        stream_close_conn(sc);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) { return n ? v[(size_t)(p * (double)(n - 1) + 0.5)] : 0; }

static int run_stream(const options_t *o, const fm_dataset_t *ds, size_t n) {
    stream_t st;
    memset(&st, 0, sizeof st);
    st.o = o;
    st.ds = ds;
    st.n = n;
    st.nconns = o->connections;
    st.conns = calloc((size_t)o->connections, sizeof *st.conns);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uint64_t t0 = fm_now_us();
    for (int i = 0; i < o->connections; i++) {
        st.conns[i].st = &st;
        fm_aclient_t *c;
        if (fm_aclient_connect(&loop, o->host, o->port, on_stream_connect, &st.conns[i], &c) != 0) {
            free(st.conns);
            return fm_cli_fail("predict --stream");
        }
        st.open++;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    double secs = (double)(fm_now_us() - t0) / 1e6;
    size_t total = 0, correct = 0;
    printf("%-10s %-7s %8s %9s %9s %9s %9s %9s\n", "version", "role", "images", "accuracy", "requests", "p50 ms",
           "p90 ms", "p99 ms");
    for (int i = 0; i < st.nv; i++) {
        vstats_t *v = &st.v[i];
        qsort(v->lat, v->nlat, sizeof *v->lat, cmp_double);
        printf("%-10s %-7s %8zu %9.4f %9zu %9.3f %9.3f %9.3f\n", v->version, v->role, v->images,
               v->images ? (double)v->correct / (double)v->images : 0.0, v->requests, pct(v->lat, v->nlat, 0.5),
               pct(v->lat, v->nlat, 0.9), pct(v->lat, v->nlat, 0.99));
        total += v->images;
        correct += v->correct;
        free(v->lat);
    }
    printf("total      %8zu images, accuracy %.4f, in %.3f s: %.0f images/s over %d connections (batch %zu, depth %d)\n",
           total, total ? (double)correct / (double)total : 0.0, secs, secs > 0 ? (double)total / secs : 0.0,
           o->connections, o->batch, o->depth);
    if (o->feedback > 0)
        printf("feedback   %8zu true labels sent back (%.0f%% of the images)%s\n", st.feedback_sent,
               o->feedback * 100, st.feedback_errors ? ", some refused" : "");
    free(st.conns);
    if (st.feedback_errors) {
        fprintf(stderr, "fmctl predict: %zu feedback calls failed\n", st.feedback_errors);
        return 1;
    }
    if (st.errors || total != n) {
        fprintf(stderr, "fmctl predict: %zu failed requests, %zu of %zu images answered (first error: %s)\n",
                st.errors, total, n, st.first_error[0] ? st.first_error : "none");
        return 1;
    }
    return 0;
}

/* ---- Entry point ------------------------------------------------------------- */

static int parse_size(const char *flag, const char *s, size_t lo, size_t hi, size_t *out) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "fmctl predict: %s must be %zu..%zu, got '%s'\n", flag, lo, hi, s);
        return 2;
    }
    *out = (size_t)v;
    return 0;
}

int fm_cmd_predict(int argc, char **argv) {
    options_t o = {.split = "t10k", .connections = 4, .depth = 8};
    const char *server = getenv("FM_SERVER");
    o.token = getenv("FM_AUTH_TOKEN");
    if (o.token && !*o.token)
        o.token = NULL;
    size_t batch = 0, conns = 4, depth = 8;
    static const struct option opts[] = {
        {"server", required_argument, 0, 'S'}, {"version", required_argument, 0, 'v'},
        {"key", required_argument, 0, 'k'},    {"probs", no_argument, 0, 'p'},
        {"limit", required_argument, 0, 'l'},  {"images", required_argument, 0, 'i'},
        {"data", required_argument, 0, 'd'},   {"split", required_argument, 0, 's'},
        {"stream", no_argument, 0, 'T'},       {"connections", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},  {"depth", required_argument, 0, 'D'},
        {"feedback", required_argument, 0, 'F'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = 0;
        switch (ch) {
        case 'S': server = optarg; break;
        case 'v': o.version = optarg; break;
        case 'k': o.key = optarg; break;
        case 'p': o.probs = 1; break;
        case 'l': rc = parse_size("--limit", optarg, 1, (size_t)1 << 30, &o.limit); break;
        case 'i': o.images = optarg; break;
        case 'd': o.data = optarg; break;
        case 's': o.split = optarg; break;
        case 'T': o.stream = 1; break;
        case 'c': rc = parse_size("--connections", optarg, 1, 1024, &conns); break;
        case 'b': rc = parse_size("--batch", optarg, 1, 4096, &batch); break;
        case 'D': rc = parse_size("--depth", optarg, 1, 1024, &depth); break;
        case 'F': {
            char *end;
            o.feedback = strtod(optarg, &end);
            if (!*optarg || *end || !(o.feedback >= 0 && o.feedback <= 1)) {
                fprintf(stderr, "fmctl predict: --feedback must be a share in 0..1, got '%s'\n", optarg);
                rc = 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (rc)
            return rc;
    }
    o.connections = (int)conns;
    o.depth = (int)depth;
    o.batch = batch ? batch : o.stream ? 16 : 64;
    int npng = argc - optind;
    if ((o.images != NULL) + (npng > 0) > 1 || (o.stream && (o.images || npng)) || (o.feedback > 0 && !o.stream)) {
        fprintf(stderr, "fmctl predict: give one source of images (--images, --data or PNG files); --stream needs a "
                        "labelled set (--data)\n");
        usage(stderr);
        return 2;
    }
    if (fm_client_parse_address(server ? server : "127.0.0.1:7070", FM_PROTO_DEFAULT_PORT, o.host, sizeof o.host,
                                &o.port) != 0)
        return fm_cli_fail("predict: --server");
    fm_dataset_t ds;
    int labelled;
    if (load_input(&o, npng, argv + optind, &ds, &labelled) != 0) {
        fm_dataset_free(&ds);
        return fm_cli_fail("predict: loading images");
    }
    size_t n = o.limit && o.limit < ds.n ? o.limit : ds.n;
    int rc = o.stream ? run_stream(&o, &ds, n) : run_once(&o, &ds, n, labelled, npng ? argv + optind : NULL);
    fm_dataset_free(&ds);
    return rc;
}
