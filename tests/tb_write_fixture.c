/* tb_write_fixture.c — writes known TensorBoard scalars and a short metrics
 * run into DIR, for tests/tb_read.py to load with TensorBoard's own loader.
 *
 * DIR/direct: gml_tb_* only; tags and values follow the formulas below, which
 * tb_read.py recomputes independently (keep the two in step).
 *   fixture/linear  steps 0,3,6,9,12   value 0.5*step - 3   (0.0 at step 6)
 *   fixture/square  steps 0,3,6,9,12   value step*step / 7
 *   fixture/decay   steps 0,3,6,9,12   value exp(-step / 4)
 *   fixture/bigstep steps 2^33 + k, k = 0..4   value -(k + 1) * 1.25
 *   wall_time of every scalar: 1700000000 + step (bigstep: + k)
 * DIR/run: gml_metrics with jsonl and tensorboard on; train steps 1..4 with
 *   loss 4 - 0.5 s, lr 1e-3 * s, grad_norm 1 / s, tokens_per_s 1000 s,
 *   mfu -1 for s <= 2 and 0.1 s after, mem 2^30, eta 10 (4 - s);
 *   eval at step 4 val 3.25; a sample; an info line.
 * Not a CMocka test (files named test_*.c are); tests/cmake/tensorboard.cmake
 * builds it and tb_read.py runs it. Exit 0 ok, 1 on any gml error, 2 usage.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "launcher/metrics.h"
#include "launcher/tb_writer.h"

static gml_status write_direct(const char *dir) {
    gml_tb_writer *w = NULL;
    GML_CHECK(gml_tb_open(dir, &w));
    gml_status st = GML_OK;
    for (int i = 0; i < 5; i++) {
        int step = 3 * i;
        double t = 1700000000.0 + step;
        GML_CHECK_GOTO(gml_tb_scalar(w, "fixture/linear", step, t, (float)(0.5 * step - 3.0)), st, done);
        GML_CHECK_GOTO(gml_tb_scalar(w, "fixture/square", step, t, (float)(step * step / 7.0)), st, done);
        GML_CHECK_GOTO(gml_tb_scalar(w, "fixture/decay", step, t, (float)exp(-step / 4.0)), st, done);
        int64_t big = ((int64_t)1 << 33) + i;
        GML_CHECK_GOTO(gml_tb_scalar(w, "fixture/bigstep", big, 1700000000.0 + i, (float)(-(i + 1) * 1.25)), st,
                       done);
    }
done:;
    gml_status st2 = gml_tb_close(w);
    return st != GML_OK ? st : st2;
}

static gml_status write_run(const char *dir) {
    gml_metrics *m = NULL;
    GML_CHECK(gml_metrics_open(dir, 1, 1, 0, &m));
    gml_status st = GML_OK;
    for (int s = 1; s <= 4; s++) {
        gml_train_stats ts = {
            .step = s,
            .steps = 4,
            .loss = 4.0 - 0.5 * s,
            .lr = 1e-3 * s,
            .grad_norm = 1.0 / s,
            .step_s = 0.25,
            .tokens_per_s = 1000.0 * s,
            .mfu = s <= 2 ? -1.0 : 0.1 * s,
            .mem_bytes = 1073741824.0,
            .eta_s = 10.0 * (4 - s),
        };
        GML_CHECK_GOTO(gml_metrics_train(m, &ts), st, done);
    }
    GML_CHECK_GOTO(gml_metrics_eval(m, 4, 3.25), st, done);
    GML_CHECK_GOTO(gml_metrics_sample(m, 4, "He said \"hi\"\n\tC:\\ caf\xc3\xa9 \xff!"), st, done);
    GML_CHECK_GOTO(gml_metrics_info(m, "device", "cpu (fixture)"), st, done);
done:;
    gml_status st2 = gml_metrics_close(m);
    return st != GML_OK ? st : st2;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/direct", argv[1]);
    gml_status st = write_direct(path);
    if (st == GML_OK) {
        snprintf(path, sizeof path, "%s/run", argv[1]);
        st = write_run(path);
    }
    if (st != GML_OK) {
        fprintf(stderr, "tb_write_fixture: %s: %s\n", gml_status_name(st), gml_error_message());
        return 1;
    }
    return 0;
}
