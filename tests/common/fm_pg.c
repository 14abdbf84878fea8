/* fm_pg.c: throwaway PostgreSQL servers for tests (see fm_pg.h). */
#include "fm_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fm_db.h"
#include "fm_error.h"

#define OWNER_WHEN_ROOT "fmtest"

struct fm_pg {
    char bindir[512];
    char dir[256];
    char data[300];
    char user[64];
    uid_t uid;
    gid_t gid;
    int as_other; /* run server commands as uid/gid (we are root) */
    int port;
    int running;
    char url[512];
    char tcp_url[512];
    int watchdog_fd; /* write end of the watchdog's pipe */
    pid_t watchdog;
};

/* ---- finding the binaries ---- */

static int is_exec(const char *dir, const char *name) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, X_OK) == 0;
}

static int find_bindir(char *out, size_t cap) {
    const char *env = getenv("FM_PG_BINDIR");
    if (env && *env && is_exec(env, "initdb") && is_exec(env, "pg_ctl")) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    /* Debian/Ubuntu keep each major version under /usr/lib/postgresql/N. */
    glob_t g;
    long best = -1;
    if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *p = g.gl_pathv[i];
            long v = strtol(p + strlen("/usr/lib/postgresql/"), NULL, 10);
            if (v > best && is_exec(p, "initdb") && is_exec(p, "pg_ctl") && is_exec(p, "postgres")) {
                best = v;
                snprintf(out, cap, "%s", p);
            }
        }
        globfree(&g);
    }
    if (best >= 0)
        return 0;
    const char *path = getenv("PATH");
    if (path) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", path);
        for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save))
            if (is_exec(d, "initdb") && is_exec(d, "pg_ctl")) {
                snprintf(out, cap, "%s", d);
                return 0;
            }
    }
    return fm_fail(FM_EUNSUPPORTED, "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin, "
                                    "$FM_PG_BINDIR or PATH; install the postgresql package "
                                    "(scripts/install-deps.sh --test)");
}

/* ---- running commands as the server's owner ---- */

/* Runs argv (argv[0] a program name inside bindir) with stdout and stderr
 * appended to `log`; returns its exit status, or -1. */
static int run_owner(const fm_pg_t *pg, char *const argv[], const char *log) {
    char prog[600];
    snprintf(prog, sizeof prog, "%s/%s", pg->bindir, argv[0]);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) {
            dup2(null, 0);
            close(null);
        }
        if (pg->as_other) {
            if (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0) {
                perror("fm_pg: dropping privileges");
                _exit(126);
            }
        }
        execv(prog, argv);
        perror(prog);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int ensure_owner(fm_pg_t *pg) {
    if (geteuid() != 0) {
        struct passwd *pw = getpwuid(geteuid());
        snprintf(pg->user, sizeof pg->user, "%s", pw ? pw->pw_name : "postgres");
        return 0;
    }
    struct passwd *pw = getpwnam(OWNER_WHEN_ROOT);
    if (!pw) {
        /* Two test programs may race to create it: whoever loses sees it. */
        int rc = system("useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "
                        OWNER_WHEN_ROOT " >/dev/null 2>&1");
        (void)rc;
        pw = getpwnam(OWNER_WHEN_ROOT);
        if (!pw)
            return fm_fail(FM_EIO, "running as root, initdb needs an unprivileged user, and "
                                   "'useradd " OWNER_WHEN_ROOT "' failed");
    }
    snprintf(pg->user, sizeof pg->user, "%s", OWNER_WHEN_ROOT);
    pg->uid = pw->pw_uid;
    pg->gid = pw->pw_gid;
    pg->as_other = 1;
    return 0;
}

/* ---- teardown ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown_dir(const fm_pg_t *pg) {
    char pid[400];
    snprintf(pid, sizeof pid, "%s/postmaster.pid", pg->data);
    if (access(pid, F_OK) == 0) {
        char log[300];
        snprintf(log, sizeof log, "%s/pg_ctl.log", pg->dir);
        char *argv[] = {"pg_ctl", "-D", (char *)pg->data, "-m", "immediate", "-w", "stop", NULL};
        run_owner(pg, argv, log);
    }
    const char *keep = getenv("FM_PG_KEEP");
    if (keep && strcmp(keep, "1") == 0)
        fprintf(stderr, "fm_pg: kept %s\n", pg->dir);
    else
        nftw(pg->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A process in its own session that waits for the test to go away (the pipe
 * reaches end-of-file however the test ends) and then stops the server and
 * removes the directory, unless fm_pg_free already did. */
static int start_watchdog(fm_pg_t *pg) {
    int fds[2];
    if (pipe(fds) != 0)
        return fm_fail(FM_EIO, "fm_pg: pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return fm_fail(FM_EIO, "fm_pg: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[1]);
        setsid();
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            close(null);
        }
        char c;
        while (read(fds[0], &c, 1) < 0 && errno == EINTR)
            ;
        /* A pg_ctl the test started may still be starting the server: try
         * again until the directory stays gone. */
        for (int i = 0; i < 20 && access(pg->dir, F_OK) == 0; i++) {
            if (i)
                sleep(1);
            teardown_dir(pg);
        }
        _exit(0);
    }
    close(fds[0]);
    /* Not inherited by programs the test runs (fmctl ...), so that their
     * lifetime does not keep the watchdog waiting. */
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    pg->watchdog_fd = fds[1];
    pg->watchdog = pid;
    return 0;
}

void fm_pg_free(fm_pg_t *pg) {
    if (!pg)
        return;
    if (pg->dir[0])
        teardown_dir(pg);
    if (pg->watchdog_fd >= 0)
        close(pg->watchdog_fd);
    if (pg->watchdog > 0)
        waitpid(pg->watchdog, NULL, 0);
    free(pg);
}

/* ---- start, stop, restart ---- */

static int port_free(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

static int pg_ctl_start(fm_pg_t *pg) {
    char log[300], opt[32];
    snprintf(log, sizeof log, "%s/server.log", pg->dir);
    snprintf(opt, sizeof opt, "-p %d", pg->port);
    char *argv[] = {"pg_ctl", "-D", pg->data, "-l", log, "-w", "-t", "60", "-o", opt, "start", NULL};
    char ctl_log[300];
    snprintf(ctl_log, sizeof ctl_log, "%s/pg_ctl.log", pg->dir);
    int rc = run_owner(pg, argv, ctl_log);
    pg->running = rc == 0;
    return rc == 0 ? 0 : -1;
}

static void tail_file(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)cap - 1 ? size - (long)cap + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

int fm_pg_start(fm_pg_t **out) {
    *out = NULL;
    fm_pg_t *pg = calloc(1, sizeof *pg);
    if (!pg)
        return fm_fail(FM_ENOMEM, "fm_pg_start: out of memory");
    pg->watchdog_fd = -1;
    int rc = find_bindir(pg->bindir, sizeof pg->bindir);
    if (rc == 0)
        rc = ensure_owner(pg);
    if (rc) {
        free(pg);
        return rc;
    }
    /* The socket lives in this directory, and socket paths are limited to
     * about 100 bytes: use TMPDIR only when it is short. */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(pg->dir, sizeof pg->dir, "%s/fmpg-XXXXXX", tmp);
    if (!mkdtemp(pg->dir)) {
        rc = fm_fail(FM_EIO, "fm_pg: mkdtemp %s: %s", pg->dir, strerror(errno));
        pg->dir[0] = '\0';
        fm_pg_free(pg);
        return rc;
    }
    chmod(pg->dir, 0755);
    if (pg->as_other && chown(pg->dir, pg->uid, pg->gid) != 0) {
        rc = fm_fail(FM_EIO, "fm_pg: chown %s to %s: %s", pg->dir, pg->user, strerror(errno));
        fm_pg_free(pg);
        return rc;
    }
    if ((rc = start_watchdog(pg)) != 0) {
        fm_pg_free(pg);
        return rc;
    }
    snprintf(pg->data, sizeof pg->data, "%s/data", pg->dir);
    char log[300];
    snprintf(log, sizeof log, "%s/initdb.log", pg->dir);
    char *initdb[] = {"initdb", "-D", pg->data, "-U", pg->user, "-A", "trust", "-E", "UTF8", "--locale=C",
                      "--no-sync", NULL};
    if (run_owner(pg, initdb, log) != 0) {
        char t[1500];
        tail_file(log, t, sizeof t);
        rc = fm_fail(FM_EIO, "fm_pg: initdb failed:\n%s", t);
        fm_pg_free(pg);
        return rc;
    }
    char conf[400];
    snprintf(conf, sizeof conf, "%s/postgresql.conf", pg->data);
    FILE *f = fopen(conf, "a");
    if (!f) {
        rc = fm_fail(FM_EIO, "fm_pg: cannot append to %s: %s", conf, strerror(errno));
        fm_pg_free(pg);
        return rc;
    }
    /* Durability off: a test server's data may be lost, its time may not. */
    fprintf(f,
            "\n# fm_pg test settings\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = '%s'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 60\nshared_buffers = 128MB\nwork_mem = 64MB\nmaintenance_work_mem = 256MB\n"
            "logging_collector = off\n",
            pg->dir);
    fclose(f);
    srand((unsigned)(getpid() ^ time(NULL)));
    for (int attempt = 0; attempt < 8 && !pg->running; attempt++) {
        pg->port = 20000 + rand() % 40000;
        if (port_free(pg->port))
            pg_ctl_start(pg);
    }
    if (!pg->running) {
        char t[1500], slog[300];
        snprintf(slog, sizeof slog, "%s/server.log", pg->dir);
        tail_file(slog, t, sizeof t);
        rc = fm_fail(FM_EIO, "fm_pg: PostgreSQL did not start; server log:\n%s", t);
        fm_pg_free(pg);
        return rc;
    }
    snprintf(pg->url, sizeof pg->url, "postgresql:///postgres?host=%s&port=%d&user=%s", pg->dir, pg->port, pg->user);
    snprintf(pg->tcp_url, sizeof pg->tcp_url, "postgresql://%s@127.0.0.1:%d/postgres", pg->user, pg->port);
    *out = pg;
    return 0;
}

int fm_pg_stop(fm_pg_t *pg) {
    char log[300];
    snprintf(log, sizeof log, "%s/pg_ctl.log", pg->dir);
    char *argv[] = {"pg_ctl", "-D", pg->data, "-m", "fast", "-w", "-t", "60", "stop", NULL};
    if (run_owner(pg, argv, log) != 0)
        return fm_fail(FM_EIO, "fm_pg: pg_ctl stop failed (see %s)", log);
    pg->running = 0;
    return 0;
}

int fm_pg_restart(fm_pg_t *pg) {
    if (pg->running)
        return 0;
    if (pg_ctl_start(pg) != 0) {
        char t[1500], slog[300];
        snprintf(slog, sizeof slog, "%s/server.log", pg->dir);
        tail_file(slog, t, sizeof t);
        return fm_fail(FM_EIO, "fm_pg: PostgreSQL did not start again on port %d; server log:\n%s", pg->port, t);
    }
    return 0;
}

int fm_pg_running(const fm_pg_t *pg) { return pg->running; }
const char *fm_pg_url(const fm_pg_t *pg) { return pg->url; }
const char *fm_pg_tcp_url(const fm_pg_t *pg) { return pg->tcp_url; }
int fm_pg_port(const fm_pg_t *pg) { return pg->port; }
const char *fm_pg_dir(const fm_pg_t *pg) { return pg->dir; }

int fm_pg_create_db(fm_pg_t *pg, const char *name, int tcp, char *url, size_t cap) {
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return fm_fail(FM_EINVAL, "fm_pg_create_db: use [a-z0-9_] in database names, not '%s'", name);
    fm_db_t *db;
    int rc = fm_db_connect(pg->url, &db);
    if (rc)
        return rc;
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\"", name);
    rc = fm_db_exec(db, sql);
    if (rc == 0) {
        snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
        rc = fm_db_exec(db, sql);
    }
    fm_db_close(db);
    if (rc)
        return rc;
    if (tcp)
        snprintf(url, cap, "postgresql://%s@127.0.0.1:%d/%s", pg->user, pg->port, name);
    else
        snprintf(url, cap, "postgresql:///%s?host=%s&port=%d&user=%s", name, pg->dir, pg->port, pg->user);
    return 0;
}

/* ---- the shared server of a test program ---- */

static fm_pg_t *shared;
static int shared_rc = 1; /* 1: not tried yet */
static char shared_error[1024];

static void free_shared(void) {
    fm_pg_free(shared);
    shared = NULL;
}

fm_pg_t *fm_pg_shared(void) { return shared; }

int fm_pg_test_db(const char *name, char *url, size_t cap) {
    if (shared_rc == 1) {
        shared_rc = fm_pg_start(&shared);
        if (shared_rc == 0)
            atexit(free_shared);
        else
            snprintf(shared_error, sizeof shared_error, "%s", fm_last_error());
    }
    if (shared_rc != 0)
        return fm_fail(shared_rc, "%s", shared_error);
    if (!shared->running && fm_pg_restart(shared) != 0)
        return FM_EIO;
    return fm_pg_create_db(shared, name, 0, url, cap);
}
