/* fm_srv_harness.h: what the server tests share: real fmserve processes on
 * loopback (free ports, readiness through --ports-file, signals, exit
 * codes), test models written with the real model format, an HTTP GET for
 * the health port, and the offline engine's answers to compare with. */
#ifndef FM_SRV_HARNESS_H
#define FM_SRV_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fm_client.h"
#include "fm_idx.h"

typedef struct fm_srv {
    pid_t pid;
    int rpc_port, http_port;
    char log_path[512];   /* the server's stderr */
    char ports_path[512];
} fm_srv_t;

/* <tmp>/models/v1 (MLP, seed 1, identity fashion-mnist-mlp v1) and
 * <tmp>/models/v2 (CNN, seed 2, fashion-mnist-cnn v2), made once per test
 * process with fm_model_new + fm_ref_random_init + fm_model_save. Returns the
 * models directory ("<dir>/v1", "<dir>/v2"). */
const char *fm_srv_models_dir(void);
/* Writes one more random MLP (for reload tests) with the given identity. */
int fm_srv_write_model(const char *dir, int cnn, uint64_t seed, const char *version);

/* Starts fmserve (path from CMake) with `args` and `env` ("NAME=value"),
 * both NULL-terminated, plus --listen 127.0.0.1 --port 0 --http-port 0 and a
 * ports file. The child starts with every FM_* variable and AB_TEST_RATIO
 * removed from its environment. Returns 0 once the ports file exists (the
 * server is ready), or FM_EUNAVAILABLE when it exited or took > 60 s (its
 * log is printed). */
int fm_srv_start(fm_srv_t *s, const char *const *args, const char *const *env);
/* Sends `sig` (0 = none) and waits up to timeout_ms for the exit. Returns the
 * exit code (0..255), 128+signal when killed by one, or -1 on timeout (the
 * process is then SIGKILLed). */
int fm_srv_stop(fm_srv_t *s, int sig, int timeout_ms);
int fm_srv_alive(const fm_srv_t *s);
void fm_srv_dump_log(const fm_srv_t *s);
/* 1 when the server's log contains `needle`. */
int fm_srv_log_contains(const fm_srv_t *s, const char *needle);

/* A blocking client on the server's RPC port (NULL on failure, reported). */
fm_client_t *fm_srv_connect(const fm_srv_t *s);
/* A plain TCP socket connected to the RPC port (-1 on failure). */
int fm_srv_socket(const fm_srv_t *s);

/* Reads the next frame from a raw socket through `r`: 1 with *out set, 0 at
 * EOF (or a connection reset), -1 on timeout or a broken stream. */
int fm_srv_read_frame(int fd, fm_mp_reader_t *r, int timeout_ms, fm_mp_msg_t **out);

/* GET on the HTTP port: the status code (or -1) and a malloc'd body. */
int fm_srv_http_get(int port, const char *path, char **body);
/* Sends `request` as it is on the HTTP port; status code (or -1) and body. */
int fm_srv_http_raw(int port, const char *request, char **body);

/* The test virtual environment's Python ($FM_TEST_PYTHON) when it runs and
 * imports msgpack, else NULL (the case should skip). */
const char *fm_srv_python(void);

/* The committed fixture test images (1,000, with labels). */
int fm_srv_fixture(fm_dataset_t *ds);
/* Labels and confidences from the CPU engine, in process. */
int fm_srv_offline(const char *model_dir, const uint8_t *pixels, size_t n, int32_t *labels, float *confidence);

/* Calls a method without params and returns the reply frame. */
int fm_srv_call0(fm_client_t *c, const char *method, fm_mp_msg_t **msg, const fm_mp_obj_t **error,
                 const fm_mp_obj_t **result);
/* Integer value of a Prometheus series line that starts with `prefix`
 * (e.g. "fm_rpc_connections "), summed over matching lines; -1 if none. */
double fm_srv_metric(const char *text, const char *prefix);

#endif /* FM_SRV_HARNESS_H */
