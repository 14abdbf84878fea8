/* fmctl: the operator's command-line tool. Commands are rows of one table;
 * each row's function lives in its own cmd_*.c file. */
#include <stdio.h>
#include <string.h>

#include "fm_cli.h"
#include "fm_error.h"

static const fm_cli_command_t commands[] = {
    {"data", "fetch", fm_cmd_data_fetch, "download the official Fashion-MNIST files and verify their checksums"},
    {"train", NULL, fm_cmd_train, "train a model (mlp or cnn) on the CPU and write it to a model directory"},
    {"eval", NULL, fm_cmd_eval, "accuracy, per-class accuracy, confusion matrix and images/s of a model"},
    {"predict", NULL, fm_cmd_predict, "classify images with a running fmserve; --stream: accuracy and latency per version"},
    {"db", "migrate", fm_cmd_db_migrate, "apply the PostgreSQL schema migrations the database lacks"},
    {"db", "accuracy", fm_cmd_db_accuracy, "live accuracy per version from the feedback clients sent back"},
    {"drift", "reference", fm_cmd_drift_reference, "store a drift reference profile from a training set and a model"},
    {"drift", "check", fm_cmd_drift_check, "check logged traffic for data drift in PostgreSQL (exit 3 on drift)"},
    {"models", "register", fm_cmd_models_register, "record a model version in the registry (verified; --role optional)"},
    {"models", "list", fm_cmd_models_list, "the registered versions and their roles (--history: every role change)"},
    {"models", "show", fm_cmd_models_show, "one registered version and its role history"},
    {"models", "promote", fm_cmd_models_promote, "canary -> stable (old stable archived), or --role canary VERSION"},
    {"models", "rollback", fm_cmd_models_rollback, "restore the stable version the current one replaced"},
    {"models", "archive", fm_cmd_models_archive, "take a version (e.g. the canary) out of service"},
    {"models", NULL, fm_cmd_models_help, "(fmctl models --help: the registry commands and their options)"},
};
static const int ncommands = (int)(sizeof commands / sizeof commands[0]);

int fm_cli_fail(const char *what) {
    fprintf(stderr, "fmctl: %s: %s\n", what, fm_last_error());
    return 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: fmctl <command> [options]   (fmctl <command> --help for its options)\n\ncommands:\n");
    for (int i = 0; i < ncommands; i++) {
        char name[48];
        snprintf(name, sizeof name, "%s%s%s", commands[i].group, commands[i].verb ? " " : "",
                 commands[i].verb ? commands[i].verb : "");
        fprintf(f, "  %-22s %s\n", name, commands[i].summary);
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < ncommands; i++) {
        const fm_cli_command_t *c = &commands[i];
        if (strcmp(argv[1], c->group) != 0)
            continue;
        if (!c->verb)
            return c->fn(argc - 1, argv + 1); /* argv[0] becomes the group name */
        if (argc >= 3 && strcmp(argv[2], c->verb) == 0)
            return c->fn(argc - 2, argv + 2);
    }
    fprintf(stderr, "fmctl: unknown command '%s%s%s'\n\n", argv[1], argc >= 3 ? " " : "", argc >= 3 ? argv[2] : "");
    usage(stderr);
    return 2;
}
