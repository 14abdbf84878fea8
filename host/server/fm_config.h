/* fm_config.h: fmserve's settings, all from one table of options (name, flag,
 * environment variable, type, default, bounds, help). The same table parses
 * flags, the environment and the optional config file, prints --help, and
 * generates the table in docs/configuration.md (--config-markdown).
 *
 * Precedence: flag > environment variable > config file > default. SIGHUP
 * re-reads the config file (the flags and environment of a running process
 * cannot change) and applies the options marked reloadable. */
#ifndef FM_CONFIG_H
#define FM_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef struct fm_config {
    char listen_address[128];
    int port;
    int http_port;
    char ports_file[512];
    char config_file[512];
    char stable_model[512];
    char canary_model[512];
    char model_source[16];
    char model_cache_dir[512];
    char mlflow_tracking_uri[512];
    char backend[8];
    int cuda_device;
    int cuda_streams;
    char precision[8];
    int cuda_graphs;
    int cpu_workers;
    int cpu_threads_per_batch;
    int max_batch_size;
    int max_queue_delay_us;
    int max_queue_size;
    double ab_test_ratio;
    char auth_token[256];
    char admin_token[256];
    int max_message_bytes;
    int max_images_per_request;
    int max_connections;
    int max_inflight_per_connection;
    int max_write_buffer_bytes;
    int drain_timeout_ms;
    char log_level[8];
    /* The prediction log and, in registry mode, the registry (PostgreSQL). */
    char database_url[1024];
    char spool_dir[512];
    int spool_max_mb;
    double sample_rate;
    double log_predictions;
    int log_buffer_mb;
    int log_batch_rows;
    int log_flush_ms;
    int log_connections;

    /* Where each option's value came from ("default", "file", "env",
     * "flag"), indexed like fm_config_options(). */
    const char *source[48];
    /* The command line, kept for SIGHUP re-reads. */
    int argc;
    char **argv;
} fm_config_t;

typedef enum { FM_OPT_INT, FM_OPT_DOUBLE, FM_OPT_STRING, FM_OPT_BOOL, FM_OPT_ENUM } fm_opt_type_t;

#define FM_OPT_RELOAD 1u /* applied again on SIGHUP */
#define FM_OPT_SECRET 2u /* never printed or logged */

typedef struct fm_option {
    const char *name;    /* config-file key and the name used in messages */
    const char *flag;    /* "--port", or NULL (environment only, e.g. secrets) */
    const char *env;     /* "FM_PORT" */
    fm_opt_type_t type;
    const char *def;     /* default, as text */
    double min, max;     /* bounds for INT and DOUBLE */
    const char *choices; /* "auto|cpu|cuda" for ENUM */
    size_t offset, size; /* field in fm_config_t */
    unsigned flags;
    const char *help;
} fm_option_t;

const fm_option_t *fm_config_options(int *count);

typedef enum { FM_CONFIG_RUN, FM_CONFIG_HELP, FM_CONFIG_MARKDOWN, FM_CONFIG_VERSION } fm_config_action_t;

/* Fills `cfg` from defaults, the config file, the environment and argv, then
 * checks bounds and cross-option rules. Returns 0 or FM_EINVAL with a detail
 * naming the option, where its value came from and the problem. */
int fm_config_load(fm_config_t *cfg, int argc, char **argv, fm_config_action_t *action);
/* Re-reads everything for SIGHUP into `out` (same argv and environment). */
int fm_config_reload(const fm_config_t *current, fm_config_t *out);

void fm_config_print_help(FILE *f);
/* The Markdown table for docs/configuration.md (malloc'd). */
char *fm_config_markdown(void);
/* Logs every option with its value and source (secrets shown as set/unset). */
void fm_config_log(const fm_config_t *cfg);

#endif /* FM_CONFIG_H */
