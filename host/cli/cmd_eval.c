/* cmd_eval.c: `fmctl eval`: a model's accuracy on a labelled set, per-class
 * accuracy, the confusion matrix and the engine's throughput. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_backend.h"
#include "fm_cli.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_time.h"

static void usage(FILE *f) {
    fprintf(f, "usage: fmctl eval --model DIR [--data DIR] [--split t10k|train] [--backend auto|cpu|cuda]\n"
               "                  [--batch-size N] [--threads N] [--json]\n"
               "  Runs the model over a labelled set (default: the 10,000 test images in --data or $FM_DATA)\n"
               "  and prints accuracy, per-class accuracy, the confusion matrix and images/s.\n");
}

int fm_cmd_eval(int argc, char **argv) {
    const char *model_dir = NULL, *data_flag = NULL, *split = "t10k", *backend = "cpu";
    int batch = 256, threads = 0, json = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},   {"data", required_argument, 0, 'd'},
                                         {"split", required_argument, 0, 's'},   {"backend", required_argument, 0, 'b'},
                                         {"batch-size", required_argument, 0, 'n'}, {"threads", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'},          {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:d:s:b:n:t:jh", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'd': data_flag = optarg; break;
        case 's': split = optarg; break;
        case 'b': backend = optarg; break;
        case 'n':
            batch = (int)strtol(optarg, &end, 10);
            if (*end || batch < 1 || batch > 65536) {
                fprintf(stderr, "fmctl eval: --batch-size must be 1..65536, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 0 || threads > 1024) {
                fprintf(stderr, "fmctl eval: --threads must be 0..1024, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model_dir || optind < argc) {
        usage(stderr);
        return 2;
    }
    const char *data_dir = fm_data_dir(data_flag);
    if (!data_dir)
        return fm_cli_fail("eval");

    fm_model_t *model = NULL;
    fm_dataset_t ds = {0};
    fm_engine_t engine = {0};
    fm_backend_model_t *bm = NULL;
    float *probs = NULL, *conf = NULL;
    int32_t *labels = NULL;
    int rc = 1;
    if (fm_model_load(model_dir, &model) != 0) {
        fm_cli_fail("eval: loading the model");
        goto done;
    }
    if (fm_dataset_load(data_dir, split, &ds) != 0) {
        fm_cli_fail("eval: loading the data");
        goto done;
    }
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.threads = threads;
    cfg.max_batch = batch;
    if (fm_engine_open(backend, &cfg, &engine) != 0 || fm_engine_prepare(&engine, model, &bm) != 0) {
        fm_cli_fail("eval: preparing the engine");
        goto done;
    }
    probs = malloc(sizeof(float) * FM_NUM_CLASSES * ds.n);
    conf = malloc(sizeof(float) * ds.n);
    labels = malloc(sizeof(int32_t) * ds.n);
    if (!probs || !conf || !labels) {
        fprintf(stderr, "fmctl eval: out of memory\n");
        goto done;
    }
    uint64_t t0 = fm_now_ns();
    for (size_t off = 0; off < ds.n; off += (size_t)batch) {
        size_t n = ds.n - off < (size_t)batch ? ds.n - off : (size_t)batch;
        fm_batch_t b = {ds.images + off * FM_IMAGE_PIXELS, n, probs + off * FM_NUM_CLASSES, labels + off, conf + off};
        if (fm_engine_infer(&engine, bm, &b) != 0) {
            fm_cli_fail("eval: inference");
            goto done;
        }
    }
    double secs = (double)(fm_now_ns() - t0) / 1e9;

    long confusion[FM_NUM_CLASSES][FM_NUM_CLASSES] = {{0}};
    size_t correct = 0;
    for (size_t i = 0; i < ds.n; i++) {
        confusion[ds.labels[i]][labels[i]]++;
        correct += labels[i] == ds.labels[i];
    }
    double acc = (double)correct / (double)ds.n;
    char desc[256];
    fm_engine_describe(&engine, desc, sizeof desc);
    if (json) {
        printf("{\"model\":\"%s\",\"version\":\"%s\",\"images\":%zu,\"correct\":%zu,\"accuracy\":%.6f,"
               "\"images_per_second\":%.1f,\"per_class_accuracy\":[",
               fm_model_name(model), fm_model_version(model), ds.n, correct, acc, (double)ds.n / secs);
        for (int k = 0; k < FM_NUM_CLASSES; k++) {
            long tot = 0;
            for (int j = 0; j < FM_NUM_CLASSES; j++)
                tot += confusion[k][j];
            printf("%s%.6f", k ? "," : "", tot ? (double)confusion[k][k] / (double)tot : 0.0);
        }
        printf("],\"confusion\":[");
        for (int k = 0; k < FM_NUM_CLASSES; k++) {
            printf("%s[", k ? "," : "");
            for (int j = 0; j < FM_NUM_CLASSES; j++)
                printf("%s%ld", j ? "," : "", confusion[k][j]);
            printf("]");
        }
        printf("]}\n");
    } else {
        printf("model    %s %s (%s)\n", fm_model_name(model), fm_model_version(model), fm_arch_summary(fm_model_arch(model)));
        printf("data     %s (%s, %zu images)\n", ds.images_path, split, ds.n);
        printf("engine   %s, batch %d\n", desc, batch);
        printf("accuracy %.2f %% (%zu / %zu)\n", 100.0 * acc, correct, ds.n);
        printf("speed    %.0f images/s (%.3f s including batching overhead)\n\n", (double)ds.n / secs, secs);
        printf("per class (rows: true class, columns: predicted class)\n");
        printf("%-12s %7s  ", "class", "acc %");
        for (int j = 0; j < FM_NUM_CLASSES; j++)
            printf("%5d", j);
        printf("\n");
        for (int k = 0; k < FM_NUM_CLASSES; k++) {
            long tot = 0;
            for (int j = 0; j < FM_NUM_CLASSES; j++)
                tot += confusion[k][j];
            printf("%d %-10s %7.2f  ", k, fm_class_names[k], tot ? 100.0 * (double)confusion[k][k] / (double)tot : 0.0);
            for (int j = 0; j < FM_NUM_CLASSES; j++)
                printf("%5ld", confusion[k][j]);
            printf("\n");
        }
    }
    rc = 0;
done:
    free(probs);
    free(conf);
    free(labels);
    if (bm)
        fm_engine_release(&engine, bm);
    fm_engine_close(&engine);
    fm_model_free(model);
    fm_dataset_free(&ds);
    return rc;
}
