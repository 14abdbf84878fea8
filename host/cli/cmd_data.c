/* cmd_data.c: `fmctl data fetch`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cli.h"
#include "fm_fetch.h"

int fm_cmd_data_fetch(int argc, char **argv) {
    const char *out = NULL, *mirror = NULL;
    int verify_only = 0;
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"mirror", required_argument, 0, 'm'},
                                         {"verify", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:m:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'm': mirror = optarg; break;
        case 'v': verify_only = 1; break;
        case 'h':
            printf("usage: fmctl data fetch [--out DIR] [--mirror URL] [--verify]\n"
                   "  Downloads the four official Fashion-MNIST files into DIR (default $FM_DATA or\n"
                   "  ./data/fashion-mnist) and checks the decompressed content against the official\n"
                   "  checksums. --verify only checks files already there. The mirror defaults to\n"
                   "  $FM_DATA_MIRROR or %s.\n",
                   FM_FETCH_DEFAULT_MIRROR);
            return 0;
        default: return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fmctl data fetch: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!out)
        out = getenv("FM_DATA");
    if (!out || !*out)
        out = "data/fashion-mnist";
    int rc = verify_only ? fm_fetch_verify(out) : fm_fetch_fashion_mnist(out, mirror);
    if (rc)
        return fm_cli_fail(verify_only ? "data verify" : "data fetch");
    printf("%s: Fashion-MNIST %s\n", out, verify_only ? "verified" : "ready and verified");
    return 0;
}
