/* tb_writer.c — writes TensorBoard event files (see tb_writer.h for the
 * format).
 *
 * Each record is packed into one buffer (header, Event bytes, footer) and
 * handed to stdio in one fwrite, so a failing disk leaves at most one partial
 * record at the end of the file; after any failed write the writer refuses
 * further records, because TensorBoard stops reading at the first bad record
 * anyway and a clear error now beats silent loss later. Not for: reading
 * event files, or anything but scalars.
 */
#include "launcher/tb_writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/crc32c.h"
#include "proto/tensorboard.pb-c.h"

#define TB_FILE_VERSION "brain.Event:2"
#define TB_HEADER_BYTES 12 /* uint64 length + uint32 masked crc of it */
#define TB_FOOTER_BYTES 4  /* uint32 masked crc of the data */

struct gml_tb_writer {
    FILE *f;
    char *path; /* owned */
    int failed; /* a write failed: the file ends in a partial record */
};

static void put_u32le(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Frame `ev` as one TFRecord and append it. */
static gml_status write_event(gml_tb_writer *w, const Gml__Tb__Event *ev) {
    if (w->failed)
        return gml_error_set(GML_ERR_IO, "event file '%s': an earlier write failed; no more records", w->path);
    size_t len = gml__tb__event__get_packed_size(ev); /* bytes */
    size_t total = TB_HEADER_BYTES + len + TB_FOOTER_BYTES;
    unsigned char small[512];
    unsigned char *buf = total <= sizeof small ? small : malloc(total);
    if (!buf) return gml_error_set(GML_ERR_NOMEM, "out of memory for a %zu-byte event record", total);
    put_u64le(buf, (uint64_t)len);
    put_u32le(buf + 8, gml_crc32c_mask(gml_crc32c(buf, 8)));
    size_t packed = gml__tb__event__pack(ev, buf + TB_HEADER_BYTES);
    gml_status st = GML_OK;
    if (packed != len) {
        st = gml_error_set(GML_ERR_INTERNAL, "protobuf-c packed %zu bytes, expected %zu", packed, len);
        goto done;
    }
    put_u32le(buf + TB_HEADER_BYTES + len, gml_crc32c_mask(gml_crc32c(buf + TB_HEADER_BYTES, len)));
    if (fwrite(buf, 1, total, w->f) != total) {
        w->failed = 1;
        st = gml_error_set(GML_ERR_IO, "cannot write to event file '%s': %s", w->path, strerror(errno));
    }
done:
    if (buf != small) free(buf);
    return st;
}

/* Keep the host name usable in a file name: [A-Za-z0-9._-], others -> '_'. */
static void host_name(char *out, size_t cap) {
    if (gethostname(out, cap) != 0) snprintf(out, cap, "localhost");
    out[cap - 1] = '\0';
    if (out[0] == '\0') snprintf(out, cap, "localhost");
    for (char *p = out; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '-' || c == '_';
        if (!ok) *p = '_';
    }
}

gml_status gml_tb_open(const char *dir, gml_tb_writer **out) {
    if (!out) return gml_error_set(GML_ERR_INVALID_ARG, "gml_tb_open: out is NULL");
    *out = NULL;
    if (!dir || !dir[0]) return gml_error_set(GML_ERR_INVALID_ARG, "gml_tb_open: empty directory name");
    GML_CHECK(gml_mkdir_p(dir));

    gml_tb_writer *w = calloc(1, sizeof *w);
    if (!w) return gml_error_set(GML_ERR_NOMEM, "out of memory for a TensorBoard writer");
    char host[256];
    host_name(host, sizeof host);
    long long now = (long long)time(NULL);
    long pid = (long)getpid();
    size_t cap = strlen(dir) + strlen(host) + 128;
    w->path = malloc(cap);
    gml_status st = GML_OK;
    if (!w->path) {
        st = gml_error_set(GML_ERR_NOMEM, "out of memory for an event file name");
        goto fail;
    }
    /* Exclusive create: a second writer in the same directory, process and
     * second gets a counter before ".gml" instead of clobbering the first. */
    for (int attempt = 0; attempt < 1000 && !w->f; attempt++) {
        if (attempt == 0)
            snprintf(w->path, cap, "%s/events.out.tfevents.%lld.%s.%ld.gml", dir, now, host, pid);
        else
            snprintf(w->path, cap, "%s/events.out.tfevents.%lld.%s.%ld.%d.gml", dir, now, host, pid, attempt);
        errno = 0;
        w->f = fopen(w->path, "wbx");
        if (!w->f && errno != EEXIST) {
            st = gml_error_set(GML_ERR_IO, "cannot create event file '%s': %s", w->path, strerror(errno));
            goto fail;
        }
    }
    if (!w->f) {
        st = gml_error_set(GML_ERR_IO, "cannot create a new event file in '%s': too many exist already", dir);
        goto fail;
    }

    Gml__Tb__Event ev = GML__TB__EVENT__INIT;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ev.wall_time = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    ev.what_case = GML__TB__EVENT__WHAT_FILE_VERSION;
    ev.file_version = (char *)TB_FILE_VERSION;
    GML_CHECK_GOTO(write_event(w, &ev), st, fail);
    GML_CHECK_GOTO(gml_tb_flush(w), st, fail);
    *out = w;
    return GML_OK;

fail:
    if (w->f) fclose(w->f);
    free(w->path);
    free(w);
    return st;
}

gml_status gml_tb_scalar(gml_tb_writer *w, const char *tag, int64_t step, double wall_time, float value) {
    if (!w) return gml_error_set(GML_ERR_INVALID_ARG, "gml_tb_scalar: writer is NULL");
    if (!tag || !tag[0]) return gml_error_set(GML_ERR_INVALID_ARG, "gml_tb_scalar: empty tag");
    Gml__Tb__Summary__Value val = GML__TB__SUMMARY__VALUE__INIT;
    val.tag = (char *)tag; /* protobuf-c wants char *; pack only reads it */
    val.value_case = GML__TB__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
    val.simple_value = value;
    Gml__Tb__Summary__Value *vals[1] = {&val};
    Gml__Tb__Summary sum = GML__TB__SUMMARY__INIT;
    sum.n_value = 1;
    sum.value = vals;
    Gml__Tb__Event ev = GML__TB__EVENT__INIT;
    ev.wall_time = wall_time;
    ev.step = step;
    ev.what_case = GML__TB__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    return write_event(w, &ev);
}

gml_status gml_tb_flush(gml_tb_writer *w) {
    if (!w) return gml_error_set(GML_ERR_INVALID_ARG, "gml_tb_flush: writer is NULL");
    if (fflush(w->f) != 0) {
        w->failed = 1;
        return gml_error_set(GML_ERR_IO, "cannot flush event file '%s': %s", w->path, strerror(errno));
    }
    return GML_OK;
}

gml_status gml_tb_close(gml_tb_writer *w) {
    if (!w) return GML_OK;
    gml_status st = GML_OK;
    if (fflush(w->f) != 0)
        st = gml_error_set(GML_ERR_IO, "cannot flush event file '%s': %s", w->path, strerror(errno));
    if (fclose(w->f) != 0 && st == GML_OK)
        st = gml_error_set(GML_ERR_IO, "cannot close event file '%s': %s", w->path, strerror(errno));
    free(w->path);
    free(w);
    return st;
}

const char *gml_tb_path(const gml_tb_writer *w) { return w ? w->path : NULL; }
