/* fm_cli.h: the subcommands of fmctl, one function per command, each in its
 * own cmd_*.c file. A command returns the process exit code: 0 success,
 * 1 failure (after printing what failed), 2 usage error. */
#ifndef FM_CLI_H
#define FM_CLI_H

typedef int (*fm_cli_fn)(int argc, char **argv);

typedef struct fm_cli_command {
    const char *group;   /* "data", "train", ... */
    const char *verb;    /* "fetch", or NULL for a one-word command */
    fm_cli_fn fn;
    const char *summary; /* one line for `fmctl help` */
} fm_cli_command_t;

int fm_cmd_data_fetch(int argc, char **argv);
int fm_cmd_train(int argc, char **argv);
int fm_cmd_eval(int argc, char **argv);
int fm_cmd_predict(int argc, char **argv);
int fm_cmd_db_migrate(int argc, char **argv);        /* cmd_db.c */
int fm_cmd_db_accuracy(int argc, char **argv);       /* cmd_db.c */
int fm_cmd_drift_reference(int argc, char **argv);   /* cmd_drift.c */
int fm_cmd_drift_check(int argc, char **argv);       /* cmd_drift.c; exit 3 on dataset drift */
int fm_cmd_models_register(int argc, char **argv);   /* cmd_models.c */
int fm_cmd_models_list(int argc, char **argv);       /* cmd_models.c */
int fm_cmd_models_show(int argc, char **argv);       /* cmd_models.c */
int fm_cmd_models_promote(int argc, char **argv);    /* cmd_models.c */
int fm_cmd_models_rollback(int argc, char **argv);   /* cmd_models.c */
int fm_cmd_models_archive(int argc, char **argv);    /* cmd_models.c */
int fm_cmd_models_help(int argc, char **argv);       /* cmd_models.c: `fmctl models` without a known verb */

/* Prints "fmctl: <what>: <last error detail>" to stderr and returns 1. */
int fm_cli_fail(const char *what);

#endif /* FM_CLI_H */
