/* cmd_models.c: `fmctl models register|list|show|promote|rollback|archive`:
 * the model registry in PostgreSQL (fm_registry.h). Each command is one
 * transaction; role changes notify the servers that follow the registry.
 *
 * Exit codes: 0 done, 1 refused or failed (the reason is printed), 2 usage. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_artifact.h"
#include "fm_cli.h"
#include "fm_db.h"
#include "fm_error.h"
#include "fm_registry.h"

typedef struct models_args {
    const char *url, *role, *by, *reason, *mlflow, *cache;
    int history, no_verify;
    const char *pos[2];
    int npos;
} models_args_t;

static void usage(FILE *f) {
    fprintf(f,
            "usage: fmctl models <command> [options]\n"
            "  register DIR|URI [--role stable|canary]  record a model version (its sidecar's version id, sha256,\n"
            "                                           metrics, MLflow run); a corrupt model is refused. URI:\n"
            "                                           models:/NAME/VERSION, models:/NAME@ALIAS or mlflow-artifacts:/...\n"
            "                                           (downloaded through --mlflow into --cache-dir and verified)\n"
            "  list [--history]                         every version and its role (--history: every role change)\n"
            "  show VERSION                             one version and its role history\n"
            "  promote [VERSION] [--role stable|canary] make VERSION (default: the canary) the stable version, the\n"
            "                                           old stable archived; --role canary sets a new canary\n"
            "  rollback                                 restore the stable version the current one replaced\n"
            "  archive VERSION                          take a version (e.g. the canary) out of service\n"
            "options:\n"
            "  --database-url URL   the registry's PostgreSQL database (default: $FM_DATABASE_URL)\n"
            "  --reason TEXT        why, recorded in the history\n"
            "  --by NAME            who, recorded in the history (default: $USER@host)\n"
            "  --no-verify          promote without loading the artifact first (servers still verify it)\n"
            "  --mlflow URI         MLflow tracking server for MLflow URIs (default: $MLFLOW_TRACKING_URI)\n"
            "  --cache-dir DIR      where MLflow artifacts are downloaded (default: $FM_MODEL_CACHE_DIR or\n"
            "                       /tmp/fmserve-models)\n"
            "Role changes end with NOTIFY on channel " FM_REGISTRY_CHANNEL
            "; servers started with --models-from registry swap at once.\n");
}

static int usage_error(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "fmctl models %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(fmctl models --help lists the commands and options)\n");
    return 2;
}

static int parse(const char *cmd, int argc, char **argv, models_args_t *a, int min_pos, int max_pos) {
    static const struct option opts[] = {{"database-url", required_argument, 0, 'u'},
                                         {"role", required_argument, 0, 'r'},
                                         {"by", required_argument, 0, 'b'},
                                         {"reason", required_argument, 0, 'm'},
                                         {"mlflow", required_argument, 0, 'f'},
                                         {"cache-dir", required_argument, 0, 'c'},
                                         {"history", no_argument, 0, 'H'},
                                         {"no-verify", no_argument, 0, 'n'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'u': a->url = optarg; break;
        case 'r': a->role = optarg; break;
        case 'b': a->by = optarg; break;
        case 'm': a->reason = optarg; break;
        case 'f': a->mlflow = optarg; break;
        case 'c': a->cache = optarg; break;
        case 'H': a->history = 1; break;
        case 'n': a->no_verify = 1; break;
        case 'h': usage(stdout); return -1;
        case ':': return usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (a->npos >= max_pos)
            return usage_error(cmd, "unexpected argument '%s'", argv[i]);
        a->pos[a->npos++] = argv[i];
    }
    if (a->npos < min_pos)
        return usage_error(cmd, "%s", min_pos == 1 && strcmp(cmd, "register") == 0 ? "needs the model directory"
                                                                                  : "needs a VERSION");
    if (a->role && strcmp(a->role, "stable") != 0 && strcmp(a->role, "canary") != 0 &&
        !(strcmp(cmd, "register") == 0 && strcmp(a->role, "none") == 0))
        return usage_error(cmd, "--role must be stable or canary, got '%s'", a->role);
    return 0;
}

/* Opens the database and checks that the registry exists; 0 or prints. */
static int open_db(const char *cmd, const models_args_t *a, fm_db_t **db) {
    char what[64];
    snprintf(what, sizeof what, "models %s", cmd);
    const char *url = fm_db_url(a->url);
    if (!url || fm_db_connect(url, db) != 0)
        return fm_cli_fail(what);
    if (fm_registry_check_schema(*db) != 0) {
        fm_db_close(*db);
        return fm_cli_fail(what);
    }
    return 0;
}

/* "test_accuracy 0.8934" from the metrics JSON, or "". */
static void metric_of(const char *json, const char *key, char *buf, size_t cap) {
    buf[0] = '\0';
    cJSON *j = cJSON_Parse(json);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (cJSON_IsNumber(v))
        snprintf(buf, cap, "%.4f", v->valuedouble);
    cJSON_Delete(j);
}

static void print_version(const fm_reg_version_t *v) {
    printf("version       %s\n", v->version);
    printf("role          %s\n", v->role);
    printf("name          %s (%s)\n", v->name, v->arch);
    printf("artifact      %s\n", v->artifact_uri);
    printf("sha256        %s\n", v->sha256);
    printf("metrics       %s\n", v->metrics);
    if (v->mlflow_run_id[0])
        printf("mlflow        run %s%s%s%s%s\n", v->mlflow_run_id, v->mlflow_model[0] ? ", " : "", v->mlflow_model,
               v->mlflow_version[0] ? " version " : "", v->mlflow_version);
    if (v->trained_at[0])
        printf("trained at    %s\n", v->trained_at);
    printf("registered    %s by %s\n", v->created_at, v->registered_by);
}

static void print_history(const fm_reg_change_t *c, int n) {
    printf("%-5s %-20s %-10s %-8s %-17s %-20s %s\n", "OP", "WHEN", "OPERATION", "VERSION", "ROLE CHANGE", "BY",
           "REASON");
    for (int i = 0; i < n; i++) {
        char roles[40];
        snprintf(roles, sizeof roles, "%s->%s", c[i].from_role, c[i].to_role);
        printf("%-5lld %-20s %-10s %-8s %-17s %-20s %s\n", (long long)c[i].operation_id, c[i].changed_at,
               c[i].operation, c[i].version, roles, c[i].changed_by, c[i].reason);
    }
}

int fm_cmd_models_register(int argc, char **argv) {
    models_args_t a;
    int rc = parse("register", argc, argv, &a, 1, 1);
    if (rc)
        return rc < 0 ? 0 : rc;
    fm_db_t *db;
    if ((rc = open_db("register", &a, &db)) != 0)
        return rc;
    const char *src = a.pos[0];
    fm_reg_version_t v;
    int is_remote = strncmp(src, "models:/", 8) == 0 || strncmp(src, "mlflow-artifacts:", 17) == 0;
    if (!is_remote) {
        rc = fm_registry_register(db, src, a.role, a.by, a.reason, &v);
    } else {
        /* An MLflow model: resolve it to its source, download and verify a
         * copy, and register the source (the servers download it too). */
        const char *tracking = a.mlflow ? a.mlflow : getenv("MLFLOW_TRACKING_URI");
        const char *cache = a.cache ? a.cache : getenv("FM_MODEL_CACHE_DIR");
        if (!cache || !*cache)
            cache = "/tmp/fmserve-models";
        char source[1024], dir[1024];
        rc = fm_artifact_resolve_mlflow(src, tracking, 30000, source, sizeof source);
        if (rc == 0)
            rc = fm_artifact_fetch(source, NULL, cache, tracking, 30000, dir, sizeof dir);
        if (rc == 0)
            rc = fm_registry_register_uri(db, dir, source, a.role, a.by, a.reason, &v);
    }
    fm_db_close(db);
    if (rc)
        return fm_cli_fail("models register");
    char acc[32];
    metric_of(v.metrics, "test_accuracy", acc, sizeof acc);
    printf("registered %s (%s, %s) from %s\n", v.version, v.name, v.arch, v.artifact_uri);
    printf("  sha256 %s%s%s\n", v.sha256, acc[0] ? ", test_accuracy " : "", acc);
    if (v.mlflow_run_id[0])
        printf("  mlflow run %s%s%s%s%s\n", v.mlflow_run_id, v.mlflow_model[0] ? ", " : "", v.mlflow_model,
               v.mlflow_version[0] ? " version " : "", v.mlflow_version);
    printf("  role %s\n", v.role);
    return 0;
}

int fm_cmd_models_list(int argc, char **argv) {
    models_args_t a;
    int rc = parse("list", argc, argv, &a, 0, 0);
    if (rc)
        return rc < 0 ? 0 : rc;
    fm_db_t *db;
    if ((rc = open_db("list", &a, &db)) != 0)
        return rc;
    if (a.history) {
        fm_reg_change_t *c;
        int n;
        rc = fm_registry_history(db, NULL, &c, &n);
        fm_db_close(db);
        if (rc)
            return fm_cli_fail("models list --history");
        print_history(c, n);
        free(c);
        return 0;
    }
    fm_reg_version_t *v;
    int n;
    rc = fm_registry_list(db, &v, &n);
    fm_db_close(db);
    if (rc)
        return fm_cli_fail("models list");
    printf("%-10s %-9s %-18s %-4s %-9s %-20s %-12s %s\n", "VERSION", "ROLE", "NAME", "ARCH", "TEST_ACC", "REGISTERED",
           "SHA256", "ARTIFACT");
    for (int i = 0; i < n; i++) {
        char acc[32];
        metric_of(v[i].metrics, "test_accuracy", acc, sizeof acc);
        printf("%-10s %-9s %-18s %-4s %-9s %-20s %-12.12s %s\n", v[i].version, v[i].role, v[i].name, v[i].arch,
               acc[0] ? acc : "-", v[i].created_at, v[i].sha256, v[i].artifact_uri);
    }
    if (n == 0)
        printf("(no versions registered: fmctl models register DIR)\n");
    free(v);
    return 0;
}

int fm_cmd_models_show(int argc, char **argv) {
    models_args_t a;
    int rc = parse("show", argc, argv, &a, 1, 1);
    if (rc)
        return rc < 0 ? 0 : rc;
    fm_db_t *db;
    if ((rc = open_db("show", &a, &db)) != 0)
        return rc;
    fm_reg_version_t v;
    fm_reg_change_t *c = NULL;
    int n = 0;
    rc = fm_registry_get(db, a.pos[0], &v);
    if (rc == 0)
        rc = fm_registry_history(db, a.pos[0], &c, &n);
    fm_db_close(db);
    if (rc)
        return fm_cli_fail("models show");
    print_version(&v);
    printf("\n");
    print_history(c, n);
    free(c);
    return 0;
}

/* Loads the version's files before a role change, so a corrupt or missing
 * artifact is refused by the command rather than by every server. */
static int verify_before(fm_db_t *db, const models_args_t *a, const char *version) {
    if (a->no_verify)
        return 0;
    fm_reg_version_t v;
    if (version) {
        if (fm_registry_get(db, version, &v) != 0)
            return -1;
    } else {
        fm_reg_version_t s;
        int hs, hc;
        if (fm_registry_roles(db, &s, &hs, &v, &hc) != 0)
            return -1;
        if (!hc)
            return 0; /* the SQL function says "there is no canary" */
    }
    char dir[1024];
    if (!fm_artifact_local_dir(v.artifact_uri, dir, sizeof dir)) {
        const char *tracking = a->mlflow ? a->mlflow : getenv("MLFLOW_TRACKING_URI");
        const char *cache = a->cache ? a->cache : getenv("FM_MODEL_CACHE_DIR");
        if (!tracking || !*tracking) {
            fprintf(stderr, "fmctl models: %s is stored in MLflow and MLFLOW_TRACKING_URI is not set: not verified "
                            "here (servers verify it before serving)\n",
                    v.version);
            return 0;
        }
        if (fm_artifact_fetch(v.artifact_uri, v.sha256, cache && *cache ? cache : "/tmp/fmserve-models", tracking,
                              30000, dir, sizeof dir) != 0)
            return -1;
        return 0;
    }
    if (fm_registry_verify_local(&v) != 0) {
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        fm_fail(FM_ECHECKSUM, "refusing to change roles: %s (--no-verify skips this check)", detail);
        return -1;
    }
    return 0;
}

int fm_cmd_models_promote(int argc, char **argv) {
    models_args_t a;
    int rc = parse("promote", argc, argv, &a, 0, 1);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *role = a.role ? a.role : "stable";
    const char *version = a.npos ? a.pos[0] : NULL;
    if (!version && strcmp(role, "canary") == 0)
        return usage_error("promote", "%s", "--role canary needs the VERSION to make the canary");
    fm_db_t *db;
    if ((rc = open_db("promote", &a, &db)) != 0)
        return rc;
    fm_reg_version_t s0, c0, s1, c1;
    int hs0, hc0, hs1, hc1;
    int64_t op = 0;
    rc = fm_registry_roles(db, &s0, &hs0, &c0, &hc0);
    if (rc == 0)
        rc = verify_before(db, &a, version);
    if (rc == 0)
        rc = fm_registry_promote(db, version, role, a.by, a.reason, &op);
    if (rc == 0)
        rc = fm_registry_roles(db, &s1, &hs1, &c1, &hc1);
    fm_db_close(db);
    if (rc)
        return fm_cli_fail("models promote");
    if (strcmp(role, "stable") == 0)
        printf("promoted %s to stable%s%s%s (operation %lld)\n", s1.version, hs0 ? "; " : "", hs0 ? s0.version : "",
               hs0 ? " archived" : "", (long long)op);
    else
        printf("%s is the canary%s%s%s (operation %lld)\n", c1.version, hc0 ? "; " : "", hc0 ? c0.version : "",
               hc0 ? " archived" : "", (long long)op);
    printf("  stable %s, canary %s; notified channel %s\n", hs1 ? s1.version : "none", hc1 ? c1.version : "none",
           FM_REGISTRY_CHANNEL);
    return 0;
}

int fm_cmd_models_rollback(int argc, char **argv) {
    models_args_t a;
    int rc = parse("rollback", argc, argv, &a, 0, 0);
    if (rc)
        return rc < 0 ? 0 : rc;
    fm_db_t *db;
    if ((rc = open_db("rollback", &a, &db)) != 0)
        return rc;
    char restored[64] = "", retired[64] = "";
    /* The version to restore is checked first, as promote does. */
    fm_db_result_t *r = NULL;
    rc = fm_db_query(db,
                     "SELECT c.previous_stable FROM model_versions v JOIN model_role_changes c USING (version) "
                     "WHERE v.role = 'stable' AND c.to_role = 'stable' ORDER BY c.id DESC LIMIT 1",
                     0, NULL, &r);
    if (rc == 0 && fm_db_result_rows(r) == 1 && !fm_db_result_is_null(r, 0, 0))
        rc = verify_before(db, &a, fm_db_result_value(r, 0, 0));
    fm_db_result_free(r);
    if (rc == 0)
        rc = fm_registry_rollback(db, a.by, a.reason, restored, sizeof restored, retired, sizeof retired);
    fm_db_close(db);
    if (rc)
        return fm_cli_fail("models rollback");
    printf("rolled back: %s is the stable version again (%s archived); notified channel %s\n", restored, retired,
           FM_REGISTRY_CHANNEL);
    return 0;
}

int fm_cmd_models_archive(int argc, char **argv) {
    models_args_t a;
    int rc = parse("archive", argc, argv, &a, 1, 1);
    if (rc)
        return rc < 0 ? 0 : rc;
    fm_db_t *db;
    if ((rc = open_db("archive", &a, &db)) != 0)
        return rc;
    rc = fm_registry_archive(db, a.pos[0], a.by, a.reason);
    fm_db_close(db);
    if (rc)
        return fm_cli_fail("models archive");
    printf("archived %s; notified channel %s\n", a.pos[0], FM_REGISTRY_CHANNEL);
    return 0;
}

int fm_cmd_models_help(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2)
        fprintf(stderr, "fmctl models: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
