/* main.c — the gml-dist command line: parse argv, run a command, turn its
 * gml_status into a message on stderr and an exit code (0 ok, 2 bad user
 * input, 1 anything else).
 *
 *   gml-dist CONFIG [key=value ...]            train (also: gml-dist train CONFIG ...)
 *   gml-dist --print-config CONFIG [key=value ...]
 *   gml-dist prep --out FILE.h5 [--tokenizer byte|char] [--strip-fortune] TEXT...
 *   gml-dist sample CONFIG [--weights PATH] [--prompt TEXT] [--tokens N] ...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/ckpt.h"
#include "comm/comm.h"
#include "core/status.h"
#include "core/version.h"
#include "launcher/config.h"
#include "launcher/prep.h"
#include "launcher/run.h"


static const char *usage =
    "usage: gml-dist CONFIG [--resume auto|PATH|none] [key=value ...]   train\n"
    "       gml-dist --print-config CONFIG [key=value ...]  print the effective config\n"
    "       gml-dist prep --out FILE.h5 [--tokenizer byte|char] [--val-fraction F] [--strip-fortune] TEXT...\n"
    "       gml-dist ckpt info PATH                         what a checkpoint holds, checksums verified\n"
    "       gml-dist ckpt export PATH OUT.h5                its weights for inference (sample --weights)\n"
    "       gml-dist sample CONFIG [--weights PATH] [--prompt TEXT] [--tokens N] [--temperature X] [--top-k K]\n"
    "       gml-dist --version | --help\n";

/* Print the error (naming rank and host in a multi-rank job). One failing
 * rank ends the whole job (MPI_Abort with the exit code), so no other rank is
 * left waiting in a collective. */
static int finish(gml_status st) {
    int code = gml_status_exit_code(st);
    if (st == GML_PREEMPTED) {
        fprintf(stderr, "gml-dist: stopped (signal or stop file) after committing a checkpoint; exit %d (requeue, then "
                        "--resume auto)\n", code);
    } else if (st != GML_OK) {
        const char *msg = gml_error_message(), *where = gml_comm_where();
        fprintf(stderr, "gml-dist: %s%serror: %s\n", where, where[0] ? ": " : "", msg[0] ? msg : gml_status_name(st));
        fflush(stdout);
        fflush(stderr);
        if (where[0]) gml_comm_abort(code);
    }
    fflush(stdout);
    gml_comm_finalize();
    return code;
}

static int bad_usage(const char *what) {
    fprintf(stderr, "gml-dist: error: %s\n%s", what, usage);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return bad_usage("no command or config given");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("gml-dist %s\n", GML_VERSION);
        return 0;
    }
    if (strcmp(cmd, "prep") == 0) return finish(gml_cmd_prep(argc - 1, argv + 1));
    if (strcmp(cmd, "sample") == 0) return finish(gml_cmd_sample(argc - 1, argv + 1));
    if (strcmp(cmd, "ckpt") == 0) {
        if (argc == 4 && strcmp(argv[2], "info") == 0) return finish(gml_ckpt_info(argv[3], stdout));
        if (argc == 5 && strcmp(argv[2], "export") == 0) {
            gml_status st = gml_ckpt_export(argv[3], argv[4]);
            if (st == GML_OK) printf("weights of %s -> %s\n", argv[3], argv[4]);
            return finish(st);
        }
        return bad_usage("usage: gml-dist ckpt info PATH | gml-dist ckpt export PATH OUT.h5");
    }
    int print_only = strcmp(cmd, "--print-config") == 0;
    int first = (print_only || strcmp(cmd, "train") == 0) ? 2 : 1;
    if (first >= argc) return bad_usage("no CONFIG given");
    const char *config_path = argv[first];
    if (config_path[0] == '-') return bad_usage("unknown flag");
    /* --resume X may stand anywhere among the overrides */
    const char *resume = "none";
    int nover = 0;
    char **over = calloc((size_t)argc, sizeof *over);
    if (!over) return finish(gml_error_set(GML_ERR_NOMEM, "out of host memory"));
    for (int i = first + 1; i < argc; i++) {
        if (strcmp(argv[i], "--resume") == 0 && !print_only) {
            if (i + 1 >= argc) {
                free(over);
                return bad_usage("--resume needs auto, none or a checkpoint path");
            }
            resume = argv[++i];
        } else {
            over[nover++] = argv[i];
        }
    }
    Gml__RunConfig *cfg = NULL;
    gml_status st = gml_config_load(config_path, nover, over, &cfg);
    if (st == GML_OK) {
        if (print_only) st = gml_config_print(cfg, stdout);
        else st = gml_cmd_train(cfg, config_path, resume);
    }
    free(over);
    gml_config_free(cfg);
    return finish(st);
}
