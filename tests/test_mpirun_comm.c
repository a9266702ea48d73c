/* test_mpirun_comm.c — the collective API of comm/comm.h on CPU (MPI)
 * groups, run by CTest as `mpiexec --oversubscribe -np 3` (every rank runs
 * the same tests in the same order; a rank whose check fails makes mpiexec
 * fail). Point to point: a ring of sends and receives with request handles,
 * an exchange through sendrecv in both directions, a sendrecv with oneself,
 * messages within a sub-group made by gml_comm_split (group ranks, not
 * world ranks), and a peer outside the group refused with the group's name.
 * Collectives: all-reduce, reduce onto a root, reduce-scatter, all-gather in
 * place, the strided all-gather ZeRO-1/2 use (blocks at rank * stride; the
 * bytes between blocks untouched), broadcast and barrier, each checked
 * against values computed here from the ranks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "comm/comm.h"

#define OK(call) assert_int_equal((call), GML_OK)

static gml_comm *g_world;
static int g_rank, g_size;

/* The byte rank `from` sends in message `tag`, position i. */
static unsigned char pattern(int from, int tag, size_t i) { return (unsigned char)(from * 31 + tag * 7 + i * 13); }

static void fill(unsigned char *b, size_t n, int from, int tag) {
    for (size_t i = 0; i < n; i++) b[i] = pattern(from, tag, i);
}

static void expect(const unsigned char *b, size_t n, int from, int tag) {
    for (size_t i = 0; i < n; i++)
        if (b[i] != pattern(from, tag, i))
            fail_msg("rank %d: byte %zu of the message from rank %d (tag %d) is %u, not %u", g_rank, i, from, tag,
                     b[i], pattern(from, tag, i));
}

static void test_ring_send_recv(void **state) {
    (void)state;
    enum { N = 1000 };
    unsigned char out[N], in[N];
    int next = (g_rank + 1) % g_size, prev = (g_rank + g_size - 1) % g_size;
    fill(out, N, g_rank, 1);
    memset(in, 0, N);
    gml_comm_req *rs = NULL, *rr = NULL;
    OK(gml_comm_recv(g_world, in, N, prev, &rr));
    OK(gml_comm_send(g_world, out, N, next, &rs));
    OK(gml_comm_wait(&rs));
    OK(gml_comm_wait(&rr));
    assert_null(rs);
    assert_null(rr);
    expect(in, N, prev, 1);
    /* two messages to the same peer arrive in the order they were posted */
    unsigned char out2[N], in2[N];
    fill(out2, N, g_rank, 2);
    OK(gml_comm_send(g_world, out, N, next, &rs));
    OK(gml_comm_send(g_world, out2, N, next, &rr));
    OK(gml_comm_recv(g_world, in, N, prev, NULL));
    OK(gml_comm_recv(g_world, in2, N, prev, NULL));
    OK(gml_comm_wait(&rs));
    OK(gml_comm_wait(&rr));
    expect(in, N, prev, 1);
    expect(in2, N, prev, 2);
}

static void test_sendrecv(void **state) {
    (void)state;
    enum { N = 4096 };
    unsigned char out[N], in[N];
    int next = (g_rank + 1) % g_size, prev = (g_rank + g_size - 1) % g_size;
    /* forward along the ring, then backward: every rank sends and receives at once */
    fill(out, N, g_rank, 3);
    OK(gml_comm_sendrecv(g_world, out, next, in, prev, N, NULL));
    expect(in, N, prev, 3);
    gml_comm_req *r = (gml_comm_req *)&r; /* must come back NULL: done */
    OK(gml_comm_sendrecv(g_world, out, prev, in, next, N, &r));
    assert_null(r);
    expect(in, N, next, 3);
    /* with oneself */
    fill(out, N, g_rank, 4);
    OK(gml_comm_sendrecv(g_world, out, g_rank, in, g_rank, N, NULL));
    expect(in, N, g_rank, 4);
}

static void test_subgroup_and_bad_peer(void **state) {
    (void)state;
    /* even and odd world ranks: group ranks 0, 1, ... within each */
    gml_comm *half = NULL;
    OK(gml_comm_split(g_world, g_rank % 2, g_rank, "half", &half));
    int hr = gml_comm_rank(half), hs = gml_comm_size(half);
    assert_int_equal(hr, g_rank / 2);
    assert_int_equal(hs, (g_size - g_rank % 2 + 1) / 2);
    unsigned char out[64], in[64];
    fill(out, sizeof out, g_rank, 5);
    OK(gml_comm_sendrecv(half, out, (hr + 1) % hs, in, (hr + hs - 1) % hs, sizeof out, NULL));
    int from_world = 2 * ((hr + hs - 1) % hs) + g_rank % 2;
    expect(in, sizeof in, from_world, 5);
    gml_error_clear();
    assert_int_equal(gml_comm_send(half, out, sizeof out, hs, NULL), GML_ERR_INVALID_ARG);
    assert_non_null(strstr(gml_error_message(), "group 'half'"));
    gml_error_clear();
    assert_int_equal(gml_comm_recv(half, in, sizeof in, -1, NULL), GML_ERR_INVALID_ARG);
    gml_comm_destroy(half);
}

static void test_collectives(void **state) {
    (void)state;
    enum { N = 6 };
    const int n = g_size;
    float buf[N];
    for (int i = 0; i < N; i++) buf[i] = (float)(g_rank + 1) * (float)(i + 1);
    OK(gml_comm_allreduce_sum_f32(g_world, buf, N, NULL));
    float tri = (float)(n * (n + 1) / 2); /* sum of rank + 1 */
    for (int i = 0; i < N; i++) assert_true(buf[i] == tri * (float)(i + 1));

    for (int i = 0; i < N; i++) buf[i] = (float)(g_rank + 1);
    OK(gml_comm_reduce_sum_f32(g_world, buf, buf, N, n - 1, NULL)); /* in place */
    if (g_rank == n - 1)
        for (int i = 0; i < N; i++) assert_true(buf[i] == tri);
    float into[N] = {0}; /* out of place onto rank 0; the others pass no receive buffer */
    for (int i = 0; i < N; i++) buf[i] = (float)(g_rank + 1) * (float)(i + 1);
    OK(gml_comm_reduce_sum_f32(g_world, buf, g_rank == 0 ? into : NULL, N, 0, NULL));
    for (int i = 0; i < N; i++) {
        assert_true(buf[i] == (float)(g_rank + 1) * (float)(i + 1)); /* send untouched (MPI) */
        assert_true(into[i] == (g_rank == 0 ? tri * (float)(i + 1) : 0.0f));
    }
    gml_error_clear();
    assert_int_equal(gml_comm_reduce_sum_f32(g_world, buf, NULL, N, g_rank, NULL), GML_ERR_INVALID_ARG);
    assert_non_null(strstr(gml_error_message(), "no receive buffer"));
    gml_error_clear();
    assert_int_equal(gml_comm_reduce_sum_f32(g_world, buf, buf, N, n, NULL), GML_ERR_INVALID_ARG); /* no rank n */

    float *send = malloc((size_t)n * 2 * sizeof *send), recv[2];
    for (int i = 0; i < n * 2; i++) send[i] = (float)(i * (g_rank + 1));
    OK(gml_comm_reduce_scatter_sum_f32(g_world, send, recv, 2, NULL));
    for (int k = 0; k < 2; k++) assert_true(recv[k] == (float)(g_rank * 2 + k) * tri);
    free(send);

    float *all = calloc((size_t)n * 3, sizeof *all);
    for (int k = 0; k < 3; k++) all[g_rank * 3 + k] = (float)(100 * g_rank + k);
    OK(gml_comm_allgather_f32(g_world, all + g_rank * 3, all, 3, NULL)); /* in place */
    for (int r = 0; r < n; r++)
        for (int k = 0; k < 3; k++) assert_true(all[r * 3 + k] == (float)(100 * r + k));
    free(all);

    /* strided: rank r's 5 bytes at r * 16; the 11 bytes after each block stay */
    unsigned char *strided = malloc((size_t)n * 16);
    memset(strided, 0xee, (size_t)n * 16);
    fill(strided + g_rank * 16, 5, g_rank, 6);
    gml_comm_req *r = NULL;
    OK(gml_comm_allgather_strided(g_world, strided, 5, 16, &r));
    OK(gml_comm_wait(&r));
    for (int k = 0; k < n; k++) {
        expect(strided + k * 16, 5, k, 6);
        for (int i = 5; i < 16; i++) assert_int_equal(strided[k * 16 + i], 0xee);
    }
    free(strided);

    unsigned char b[32];
    if (g_rank == 1 % n) fill(b, sizeof b, g_rank, 8);
    else memset(b, 0, sizeof b);
    OK(gml_comm_broadcast(g_world, b, sizeof b, 1 % n, NULL));
    expect(b, sizeof b, 1 % n, 8);
    unsigned char src[32], dst[32]; /* out of place: the last rank's src into everyone's dst, its own included */
    fill(src, sizeof src, g_rank, 9);
    memset(dst, 0, sizeof dst);
    OK(gml_comm_broadcast_from(g_world, g_rank == n - 1 ? src : NULL, dst, sizeof dst, n - 1, NULL));
    expect(dst, sizeof dst, n - 1, 9);
    expect(src, sizeof src, g_rank, 9); /* untouched */
    gml_error_clear();
    assert_int_equal(gml_comm_broadcast_from(g_world, NULL, dst, sizeof dst, g_rank, NULL), GML_ERR_INVALID_ARG);
    OK(gml_comm_barrier(g_world));
}

int main(void) {
    gml_comm_set_timeout(60); /* a rank whose check failed skips collectives: the others stop after a minute */
    if (gml_comm_init(&g_rank, &g_size, NULL, NULL) != GML_OK || gml_comm_world(&g_world) != GML_OK) {
        fprintf(stderr, "test_mpirun_comm: MPI did not start: %s\n", gml_error_message());
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ring_send_recv), cmocka_unit_test(test_sendrecv),
                                       cmocka_unit_test(test_subgroup_and_bad_peer),
                                       cmocka_unit_test(test_collectives)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    gml_comm_destroy(g_world);
    gml_comm_finalize();
    return failed;
}
