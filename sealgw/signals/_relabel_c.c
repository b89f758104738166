/*
 * sealgw.signals._relabel_c: the per-series loops of sealgw.signals._relabel
 * and sealgw.signals._labelcheck in C, for the label actions and the label
 * checks on the encoded bytes of a remote-write request.
 *
 * relabel_encoded(raw, adds, drop) does what _relabel_python() does, byte
 * for byte, and steps aside (None) on exactly the same bodies: it is the
 * same reading of the same shape, only without a Python object per label.
 * The Python side prepares the arguments once per request (the added
 * labels encoded, the names to delete); see _relabel.py for the shape read
 * and why anything else is left to the protobuf objects.
 *
 * check_samples(raw, max_labels, max_name, max_value, min_ts, max_ts) does
 * what _check_samples_python() does: every series judged against the
 * sample limits (labels per series, name and value lengths, reserved
 * names, the timestamp window), one code a series; see _samplecheck.py.
 *
 * check_labels(raw) does what _check_labels_python() does: the same shape
 * read, the names in any order, and the verdict of remote_write.validate
 * (the first bad series, its problem, the name at fault) or None; see
 * _labelcheck.py.
 *
 * convert_v2(raw, limit) writes a remote write 2.0 request as 1.0, what
 * remote_write2.to_v1() does on the protobuf objects, and relabel_v2(raw,
 * adds, drop, tail) does what remote_write2.apply_labels() does, through
 * the symbols table; each steps aside (None) on a request with a problem
 * (a bad reference, labels past the limit, a name twice) or of another
 * shape, and the objects then do it and say what is wrong; see
 * remote_write2.py.
 *
 * split_by_label(raw, name, max_series) does what _split_encoded() in tenant_split.py
 * does: the series grouped by the value of one label, each kept as the
 * bytes it came as.
 *
 * Every read is bounded by the end of the message it belongs to (a label
 * by its series, a name or value by its label, a series by the body), every
 * varint by ten bytes and 64 bits: a hostile body gets None, never a read
 * outside it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

#define TIMESERIES 0x0A  /* WriteRequest.timeseries: field 1, length-delimited */
#define LABELS 0x0A      /* TimeSeries.labels: field 1, length-delimited */
#define LABEL_NAME 0x0A  /* Label.name: field 1 */
#define LABEL_VALUE 0x12 /* Label.value: field 2 */
#define MAX_VARINT 10

/* A one-byte tag (fields 1 to 15) of a length-delimited field: the only
   kind this shape has. */
#define LENGTH_DELIMITED(tag) (((tag) & 0x87) == 0x02)

/* The added labels handled without allocating. */
#define FEW 8

typedef struct {
    const unsigned char *name;
    size_t name_len;
    const unsigned char *label; /* the whole encoded TimeSeries.labels field */
    size_t label_len;
} add_t;

typedef struct {
    const unsigned char *name;
    size_t len;
} name_t;

typedef struct {
    const add_t *adds;
    Py_ssize_t nadds;
    size_t adds_total; /* all of them encoded, one after the other */
    const name_t *drop;
    Py_ssize_t ndrop;
} actions_t;

typedef struct {
    PyObject *bytes; /* a bytes object used as the buffer, shrunk at the end */
    size_t len;
    size_t cap;
} buffer_t;

/* The varint at data[*pos], read no further than data[end - 1]: 0 with
   *pos moved past it, or -1 when it is truncated, longer than ten bytes
   or above 64 bits (more than any body holds, which is what the Python
   reference concludes from the same bytes). */
static int
read_varint(const unsigned char *data, size_t *pos, size_t end, uint64_t *value)
{
    size_t p = *pos;
    uint64_t result = 0;
    for (int i = 0; i < MAX_VARINT; i++) {
        if (p >= end) {
            return -1;
        }
        unsigned char byte = data[p++];
        if (i == MAX_VARINT - 1 && byte > 1) {
            return -1;
        }
        result |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            *value = result;
            *pos = p;
            return 0;
        }
    }
    return -1;
}

/* A length prefix at data[*pos]: 0 with *length set and *pos at the
   bytes it counts, which end by end; -1 otherwise. */
static inline int
read_length(const unsigned char *data, size_t *pos, size_t end, size_t *length)
{
    uint64_t value;
    if (*pos < end && data[*pos] < 0x80) {
        value = data[*pos]; /* one byte: the rule for a label */
        *pos += 1;
    }
    else if (read_varint(data, pos, end, &value) < 0) {
        return -1;
    }
    if (value > (uint64_t)(end - *pos)) {
        return -1;
    }
    *length = (size_t)value;
    return 0;
}

static inline size_t
varint_size(size_t value)
{
    size_t size = 1;
    while (value > 0x7F) {
        value >>= 7;
        size++;
    }
    return size;
}

static inline unsigned char *
write_varint(unsigned char *out, size_t value)
{
    while (value > 0x7F) {
        *out++ = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out++ = (unsigned char)value;
    return out;
}

/* Bytes compared as Python compares them. */
static inline int
compare(const unsigned char *a, size_t a_len, const unsigned char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (c != 0) {
        return c;
    }
    return a_len < b_len ? -1 : (a_len > b_len ? 1 : 0);
}

static inline int
dropped(const unsigned char *name, size_t len, const actions_t *actions)
{
    for (Py_ssize_t i = 0; i < actions->ndrop; i++) {
        if (actions->drop[i].len == len && memcmp(actions->drop[i].name, name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Room for more bytes: 0, or -1 with an exception set. */
static int
reserve(buffer_t *out, size_t more)
{
    if (more <= out->cap - out->len) {
        return 0;
    }
    if (more > (size_t)PY_SSIZE_T_MAX - out->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t need = out->len + more;
    size_t cap = out->cap;
    while (cap < need) {
        cap = cap > (size_t)PY_SSIZE_T_MAX / 2 ? (size_t)PY_SSIZE_T_MAX : cap * 2;
    }
    if (_PyBytes_Resize(&out->bytes, (Py_ssize_t)cap) < 0) {
        return -1; /* the buffer is gone, the exception set */
    }
    out->cap = cap;
    return 0;
}

static inline unsigned char *
buffer_at(buffer_t *out)
{
    return (unsigned char *)PyBytes_AS_STRING(out->bytes) + out->len;
}

/* One TimeSeries.labels field, as read_label finds it. */
typedef struct {
    const unsigned char *name;
    size_t name_len;
    int has_value;    /* a value that is not empty */
    size_t value_len; /* its length, 0 when there is none */
    size_t end;       /* where the field ends */
} label_t;

/* The label field whose tag is at raw[pos], read within stop: a name and
   then, optionally, a value and nothing else.  0 with *label filled, or
   -1 when it is not of that shape. */
static int
read_label(const unsigned char *raw, size_t pos, size_t stop, label_t *label)
{
    size_t p = pos + 1;
    size_t length, name_len, value_len;
    if (read_length(raw, &p, stop, &length) < 0) {
        return -1;
    }
    size_t label_end = p + length;
    if (p >= label_end || raw[p] != LABEL_NAME) {
        return -1;
    }
    p++;
    if (read_length(raw, &p, label_end, &name_len) < 0) {
        return -1;
    }
    label->name = raw + p;
    label->name_len = name_len;
    label->has_value = 0;
    label->value_len = 0;
    label->end = label_end;
    p += name_len;
    if (p < label_end) {
        /* The value, and nothing after it. */
        if (raw[p] != LABEL_VALUE) {
            return -1;
        }
        p++;
        if (read_length(raw, &p, label_end, &value_len) < 0 || p + value_len != label_end) {
            return -1;
        }
        label->has_value = value_len > 0;
        label->value_len = value_len;
    }
    return 0;
}

/* Whether raw[pos:stop], what follows a series' labels (samples,
   exemplars, histograms), is of the shape: length-delimited fields only,
   and no label among them.  0 if so, -1 if not. */
static int
check_rest(const unsigned char *raw, size_t pos, size_t stop)
{
    while (pos < stop) {
        unsigned char tag = raw[pos];
        size_t length;
        if (tag == LABELS || !LENGTH_DELIMITED(tag)) {
            return -1;
        }
        pos++;
        if (read_length(raw, &pos, stop, &length) < 0) {
            return -1;
        }
        pos += length;
    }
    return 0;
}

/* The WriteRequest field whose tag is at raw[pos]: 0 with its tag and its
   bytes raw[*start:*stop], or -1 when it is not length-delimited (the only
   kind expected there) or runs past end. */
static int
next_field(const unsigned char *raw, size_t pos, size_t end, unsigned char *tag,
           size_t *start, size_t *stop)
{
    size_t length;
    *tag = raw[pos];
    *start = pos + 1;
    if (!LENGTH_DELIMITED(*tag) || read_length(raw, start, end, &length) < 0) {
        return -1;
    }
    *stop = *start + length;
    return 0;
}

/* One series, raw[start:stop], relabelled onto the buffer with its tag and
   length prefix: 0, or 1 when it is not of the shape (nothing written),
   or -1 with an exception set. */
static int
relabel_series(const unsigned char *raw, size_t start, size_t stop,
               const actions_t *actions, buffer_t *out)
{
    /* The result is at most the series and every added label: its bytes
       go after the longest prefix they may need, and move back if the
       prefix comes out shorter. */
    size_t bound = (stop - start) + actions->adds_total;
    size_t prefix = varint_size(bound);
    if (reserve(out, 1 + prefix + bound) < 0) {
        return -1;
    }
    unsigned char *head = buffer_at(out);
    unsigned char *body = head + 1 + prefix;
    unsigned char *w = body;
    const add_t *adds = actions->adds;
    Py_ssize_t nadds = actions->nadds;
    Py_ssize_t pending = 0;
    const unsigned char *previous = NULL;
    size_t previous_len = 0;
    size_t pos = start;

    while (pos < stop && raw[pos] == LABELS) {
        label_t label;
        if (read_label(raw, pos, stop, &label) < 0) {
            return 1;
        }
        const unsigned char *name = label.name;
        size_t name_len = label.name_len;
        size_t label_end = label.end;
        int empty = !label.has_value;
        if (previous != NULL && compare(name, name_len, previous, previous_len) <= 0) {
            return 1; /* unsorted or repeated */
        }
        previous = name;
        previous_len = name_len;
        int c = 1;
        while (pending < nadds
               && (c = compare(adds[pending].name, adds[pending].name_len, name, name_len)) < 0) {
            memcpy(w, adds[pending].label, adds[pending].label_len);
            w += adds[pending].label_len;
            pending++;
        }
        if (pending < nadds && c == 0) {
            /* Replaces the series' own value. */
            memcpy(w, adds[pending].label, adds[pending].label_len);
            w += adds[pending].label_len;
            pending++;
        }
        else if (!empty && !dropped(name, name_len, actions)) {
            memcpy(w, raw + pos, label_end - pos);
            w += label_end - pos;
        }
        /* else: deleted, or an empty value, which is no label */
        pos = label_end;
    }
    for (; pending < nadds; pending++) {
        memcpy(w, adds[pending].label, adds[pending].label_len);
        w += adds[pending].label_len;
    }
    /* The other fields (samples, exemplars, histograms) pass as they are;
       a label after them would be out of this shape. */
    if (check_rest(raw, pos, stop) < 0) {
        return 1;
    }
    memcpy(w, raw + pos, stop - pos);
    w += stop - pos;

    size_t written = (size_t)(w - body);
    size_t actual = varint_size(written);
    head[0] = TIMESERIES;
    if (actual < prefix) {
        memmove(head + 1 + actual, body, written);
    }
    write_varint(head + 1, written);
    out->len += 1 + actual + written;
    return 0;
}

/* The whole body: 0 with the buffer filled, 1 when not of the shape, -1
   with an exception set. */
static int
relabel_body(const unsigned char *raw, size_t end, const actions_t *actions, buffer_t *out)
{
    size_t pos = 0;
    while (pos < end) {
        unsigned char tag;
        size_t start, stop;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1;
        }
        if (tag == TIMESERIES) {
            int result = relabel_series(raw, start, stop, actions, out);
            if (result != 0) {
                return result;
            }
        }
        else {
            /* Metadata and the like, as they are. */
            if (reserve(out, stop - pos) < 0) {
                return -1;
            }
            memcpy(buffer_at(out), raw + pos, stop - pos);
            out->len += stop - pos;
        }
        pos = stop;
    }
    return 0;
}

/* The prepared actions read from their Python form: 0, or -1 with an
   exception set. */
static int
read_actions(PyObject *adds_tuple, PyObject *drop_tuple, add_t *adds, name_t *drop,
             actions_t *actions)
{
    Py_ssize_t nadds = PyTuple_GET_SIZE(adds_tuple);
    Py_ssize_t ndrop = PyTuple_GET_SIZE(drop_tuple);
    size_t total = 0;
    for (Py_ssize_t i = 0; i < nadds; i++) {
        PyObject *item = PyTuple_GET_ITEM(adds_tuple, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "adds: a tuple of (name, encoded label) bytes pairs");
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        PyObject *label = PyTuple_GET_ITEM(item, 1);
        adds[i].name = (const unsigned char *)PyBytes_AS_STRING(name);
        adds[i].name_len = (size_t)PyBytes_GET_SIZE(name);
        adds[i].label = (const unsigned char *)PyBytes_AS_STRING(label);
        adds[i].label_len = (size_t)PyBytes_GET_SIZE(label);
        if (i > 0 && compare(adds[i - 1].name, adds[i - 1].name_len,
                             adds[i].name, adds[i].name_len) >= 0) {
            PyErr_SetString(PyExc_ValueError, "adds: names must be sorted and unique");
            return -1;
        }
        if (adds[i].label_len > (size_t)PY_SSIZE_T_MAX - total) {
            PyErr_NoMemory();
            return -1;
        }
        total += adds[i].label_len;
    }
    for (Py_ssize_t i = 0; i < ndrop; i++) {
        PyObject *name = PyTuple_GET_ITEM(drop_tuple, i);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "drop: a tuple of bytes");
            return -1;
        }
        drop[i].name = (const unsigned char *)PyBytes_AS_STRING(name);
        drop[i].len = (size_t)PyBytes_GET_SIZE(name);
    }
    actions->adds = adds;
    actions->nadds = nadds;
    actions->adds_total = total;
    actions->drop = drop;
    actions->ndrop = ndrop;
    return 0;
}

PyDoc_STRVAR(relabel_encoded_doc,
"relabel_encoded(raw, adds, drop, /)\n"
"--\n"
"\n"
"raw (an uncompressed WriteRequest, bytes-like) with the labels of adds\n"
"set on every series and the names in drop deleted, labels kept sorted;\n"
"a label with an empty value is deleted too.\n"
"\n"
"adds: a tuple of (name, encoded TimeSeries.labels field) bytes pairs,\n"
"sorted by name; drop: a tuple of names (bytes).  Returns the new\n"
"encoding, or None when raw is not in the shape handled (the caller then\n"
"uses the protobuf objects).");

static PyObject *
relabel_encoded(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "relabel_encoded() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyTuple_Check(args[1]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "relabel_encoded(): adds and drop must be tuples");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    add_t few_adds[FEW];
    name_t few_drop[FEW];
    add_t *adds = few_adds;
    name_t *drop = few_drop;
    Py_ssize_t nadds = PyTuple_GET_SIZE(args[1]);
    Py_ssize_t ndrop = PyTuple_GET_SIZE(args[2]);
    PyObject *result = NULL;
    buffer_t out = {NULL, 0, 0};
    actions_t actions;

    if (nadds > FEW) {
        adds = PyMem_New(add_t, (size_t)nadds);
    }
    if (ndrop > FEW) {
        drop = PyMem_New(name_t, (size_t)ndrop);
    }
    if (adds == NULL || drop == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (read_actions(args[1], args[2], adds, drop, &actions) < 0) {
        goto done;
    }
    size_t end = (size_t)view.len;
    /* Room for the body and a label or two a series; more if needed. */
    out.cap = end + end / 4 + 64;
    out.bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out.cap);
    if (out.bytes == NULL) {
        goto done;
    }
    switch (relabel_body((const unsigned char *)view.buf, end, &actions, &out)) {
    case 0:
        if (_PyBytes_Resize(&out.bytes, (Py_ssize_t)out.len) == 0) {
            result = out.bytes;
            out.bytes = NULL;
        }
        break;
    case 1:
        result = Py_NewRef(Py_None);
        break;
    default:
        break; /* the exception is set */
    }

done:
    Py_XDECREF(out.bytes);
    if (adds != few_adds) {
        PyMem_Free(adds);
    }
    if (drop != few_drop) {
        PyMem_Free(drop);
    }
    PyBuffer_Release(&view);
    return result;
}

/* --- check_labels: the label rules of check: labels ------------------ */

/* The problems, in the order remote_write.validate looks for them (the
   constants of sealgw.signals._labelcheck). */
enum {
    FINE = 0,
    DUPLICATE_NAME = 1,
    UNSORTED = 2,
    NO_METRIC_NAME = 3,
    INVALID_NAME = 4,
    EMPTY_METRIC_NAME = 5,
};

static const unsigned char METRIC_NAME[] = "__name__";
#define METRIC_NAME_LEN (sizeof(METRIC_NAME) - 1)

/* The bytes of a legacy label name ([a-zA-Z_][a-zA-Z0-9_]*): 2 for those
   that may start one, 1 for digits, which may only follow.  D1: the ten
   digits; L2: half an alphabet (13 letters). */
#define D1 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
#define L2 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
#define Z16 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
static const unsigned char NAME_BYTES[256] = {
    Z16, Z16, Z16,                   /* 0x00 - 0x2F */
    D1, 0, 0, 0, 0, 0, 0,            /* '0' - '9', 0x3A - 0x3F */
    0, L2, L2, 0, 0, 0, 0, 2,        /* 0x40, 'A' - 'Z', 0x5B - 0x5E, '_' */
    0, L2, L2,                       /* 0x60, 'a' - 'z' (the rest: 0) */
};
#undef D1
#undef L2
#undef Z16

static inline int
valid_name(const unsigned char *name, size_t len)
{
    if (len == 0 || NAME_BYTES[name[0]] != 2) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if (NAME_BYTES[name[i]] == 0) {
            return 0;
        }
    }
    return 1;
}

typedef struct {
    int problem;
    const unsigned char *name; /* the name at fault, in the body */
    size_t name_len;
} verdict_t;

/* One series, raw[start:stop], judged: 0 with *verdict set, or 1 when it
   is not of the shape.  The same reading as _check_series. */
static int
check_series(const unsigned char *raw, size_t start, size_t stop, verdict_t *verdict)
{
    const unsigned char *previous = NULL;
    size_t previous_len = 0;
    verdict_t order = {FINE, NULL, 0};   /* the first name out of order */
    const unsigned char *invalid = NULL; /* the first invalid name */
    size_t invalid_len = 0;
    int metric = -1; /* whether __name__ has a value; -1: no __name__ */
    size_t pos = start;

    while (pos < stop && raw[pos] == LABELS) {
        label_t label;
        if (read_label(raw, pos, stop, &label) < 0) {
            return 1;
        }
        const unsigned char *name = label.name;
        size_t name_len = label.name_len;
        size_t label_end = label.end;
        int filled = label.has_value;
        if (order.problem == FINE && previous != NULL) {
            int c = compare(name, name_len, previous, previous_len);
            if (c <= 0) {
                order.problem = c == 0 ? DUPLICATE_NAME : UNSORTED;
                order.name = name;
                order.name_len = name_len;
            }
        }
        previous = name;
        previous_len = name_len;
        if (name_len == METRIC_NAME_LEN && memcmp(name, METRIC_NAME, METRIC_NAME_LEN) == 0) {
            metric = filled;
        }
        else if (invalid == NULL && !valid_name(name, name_len)) {
            invalid = name;
            invalid_len = name_len;
        }
        pos = label_end;
    }
    /* The other fields (samples, exemplars, histograms): not read, but a
       label after them would be out of this shape. */
    if (check_rest(raw, pos, stop) < 0) {
        return 1;
    }
    if (order.problem != FINE) {
        *verdict = order;
    }
    else if (metric < 0) {
        *verdict = (verdict_t){NO_METRIC_NAME, NULL, 0};
    }
    else if (invalid != NULL) {
        *verdict = (verdict_t){INVALID_NAME, invalid, invalid_len};
    }
    else if (!metric) {
        *verdict = (verdict_t){EMPTY_METRIC_NAME, METRIC_NAME, METRIC_NAME_LEN};
    }
    else {
        *verdict = (verdict_t){FINE, NULL, 0};
    }
    return 0;
}

/* The whole body, up to its first bad series: 0 with *index and *verdict
   set, or 1 when it is not of the shape. */
static int
check_body(const unsigned char *raw, size_t end, Py_ssize_t *index, verdict_t *verdict)
{
    size_t pos = 0;
    Py_ssize_t count = 0;
    while (pos < end) {
        unsigned char tag;
        size_t start, stop;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1;
        }
        if (tag == TIMESERIES) {
            if (check_series(raw, start, stop, verdict) != 0) {
                return 1;
            }
            if (verdict->problem != FINE) {
                *index = count;
                return 0;
            }
            count++;
        }
        pos = stop;
    }
    *index = count;
    *verdict = (verdict_t){FINE, NULL, 0};
    return 0;
}

PyDoc_STRVAR(check_labels_doc,
"check_labels(raw, /)\n"
"--\n"
"\n"
"The label rules of check: labels on raw (an uncompressed WriteRequest,\n"
"bytes-like): (index, problem, name) for the first bad series (its index,\n"
"a problem code of sealgw.signals._labelcheck, the name at fault), or\n"
"(number of series, 0, b'') when every series is valid; None when raw is\n"
"not in the shape handled (the caller then uses the protobuf objects).");

static PyObject *
check_labels(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t index = 0;
    verdict_t verdict = {FINE, NULL, 0};
    PyObject *result;
    if (check_body((const unsigned char *)view.buf, (size_t)view.len, &index, &verdict) != 0) {
        result = Py_NewRef(Py_None);
    }
    else {
        result = Py_BuildValue("(niy#)", index, verdict.problem,
                               verdict.name != NULL ? (const char *)verdict.name : "",
                               (Py_ssize_t)verdict.name_len);
    }
    PyBuffer_Release(&view);
    return result;
}


/* --- check_samples: the sample limits ------------------------------- */

/* The problems, first to last in the order a series reports them (the
   constants of sealgw.signals._samplecheck). */
enum {
    TOO_MANY_LABELS = 1,
    RESERVED_NAME = 2,
    NAME_TOO_LONG = 3,
    VALUE_TOO_LONG = 4,
    TOO_NEW = 5,
    TOO_OLD = 6,
    NO_PROBLEM = 7, /* above every problem: none found yet */
};

#define SAMPLES 0x12            /* TimeSeries.samples: field 2 */
#define HISTOGRAMS 0x22         /* TimeSeries.histograms: field 4 */
#define SAMPLE_TIMESTAMP 2      /* Sample.timestamp, a varint */
#define HISTOGRAM_TIMESTAMP 15  /* Histogram.timestamp, a varint */

typedef struct {
    Py_ssize_t max_labels;
    Py_ssize_t max_name;
    Py_ssize_t max_value;
    long long min_ts;
    long long max_ts;
} limits_t;

/* The timestamp of the message raw[start:stop] (a sample or a histogram),
   its field number: the last one written, as protobuf reads it, 0 when
   there is none.  0 with *when set, or -1 when a field cannot be skipped
   or the timestamp is not a varint. */
static int
read_timestamp(const unsigned char *raw, size_t start, size_t stop, uint64_t number,
               long long *when)
{
    size_t pos = start;
    uint64_t found = 0;
    while (pos < stop) {
        uint64_t tag, value;
        if (read_varint(raw, &pos, stop, &tag) < 0) {
            return -1;
        }
        unsigned wire = (unsigned)(tag & 7);
        uint64_t field = tag >> 3;
        if (field == 0 || (field == number && wire != 0)) {
            return -1;
        }
        switch (wire) {
        case 0:
            if (read_varint(raw, &pos, stop, &value) < 0) {
                return -1;
            }
            if (field == number) {
                found = value;
            }
            break;
        case 1:
            if (stop - pos < 8) {
                return -1;
            }
            pos += 8;
            break;
        case 5:
            if (stop - pos < 4) {
                return -1;
            }
            pos += 4;
            break;
        case 2:
            if (read_varint(raw, &pos, stop, &value) < 0 || value > (uint64_t)(stop - pos)) {
                return -1;
            }
            pos += (size_t)value;
            break;
        default:
            return -1;
        }
    }
    /* An int64 written as its two's complement, as protobuf writes it. */
    *when = found > (uint64_t)LLONG_MAX ? -(long long)(~found) - 1 : (long long)found;
    return 0;
}

#define WORSE(worst, problem) ((worst) = (problem) < (worst) ? (problem) : (worst))

/* One series, raw[start:stop], against the limits: 0 with *code set (0
   for a valid series), or 1 when it is not of the shape. */
static int
limit_series(const unsigned char *raw, size_t start, size_t stop, const limits_t *limits,
             int *code)
{
    size_t pos = start;
    Py_ssize_t labels = 0;
    int worst = NO_PROBLEM;

    while (pos < stop && raw[pos] == LABELS) {
        label_t label;
        if (read_label(raw, pos, stop, &label) < 0) {
            return 1;
        }
        labels++;
        if (label.name_len >= 2 && label.name[0] == '_' && label.name[1] == '_'
            && !(label.name_len == METRIC_NAME_LEN
                 && memcmp(label.name, METRIC_NAME, METRIC_NAME_LEN) == 0)) {
            WORSE(worst, RESERVED_NAME);
        }
        if (label.name_len > (size_t)limits->max_name) {
            WORSE(worst, NAME_TOO_LONG);
        }
        if (label.value_len > (size_t)limits->max_value) {
            WORSE(worst, VALUE_TOO_LONG);
        }
        pos = label.end;
    }
    if (labels > limits->max_labels) {
        worst = TOO_MANY_LABELS;
    }
    while (pos < stop) {
        unsigned char tag = raw[pos];
        size_t length;
        if (tag == LABELS || !LENGTH_DELIMITED(tag)) {
            return 1;
        }
        pos++;
        if (read_length(raw, &pos, stop, &length) < 0) {
            return 1;
        }
        if (tag == SAMPLES || tag == HISTOGRAMS) {
            long long when;
            uint64_t number = tag == SAMPLES ? SAMPLE_TIMESTAMP : HISTOGRAM_TIMESTAMP;
            if (read_timestamp(raw, pos, pos + length, number, &when) < 0) {
                return 1;
            }
            if (when > limits->max_ts) {
                WORSE(worst, TOO_NEW);
            }
            else if (when < limits->min_ts) {
                WORSE(worst, TOO_OLD);
            }
        }
        pos += length;
    }
    *code = worst == NO_PROBLEM ? FINE : worst;
    return 0;
}

/* The whole body: 0 with *count series judged and, when one is not
   valid, *codes (PyMem, one byte a series) allocated; 1 when not of the
   shape; -1 with an exception set. */
static int
limit_body(const unsigned char *raw, size_t end, const limits_t *limits, Py_ssize_t *count,
           unsigned char **codes)
{
    size_t pos = 0;
    size_t cap = 0;
    Py_ssize_t n = 0;
    *codes = NULL;
    while (pos < end) {
        unsigned char tag;
        size_t start, stop;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1;
        }
        if (tag == TIMESERIES) {
            int code;
            if (limit_series(raw, start, stop, limits, &code) != 0) {
                return 1;
            }
            if (code != FINE && *codes == NULL) {
                /* The first bad series: every one before it was valid. */
                cap = (size_t)n < 32 ? 64 : 2 * (size_t)n;
                *codes = PyMem_Calloc(cap, 1);
                if (*codes == NULL) {
                    PyErr_NoMemory();
                    return -1;
                }
            }
            if (*codes != NULL) {
                if ((size_t)n == cap) {
                    unsigned char *more = PyMem_Realloc(*codes, 2 * cap);
                    if (more == NULL) {
                        PyErr_NoMemory();
                        return -1;
                    }
                    *codes = more;
                    cap *= 2;
                }
                (*codes)[n] = (unsigned char)code;
            }
            n++;
        }
        pos = stop;
    }
    *count = n;
    return 0;
}

PyDoc_STRVAR(check_samples_doc,
"check_samples(raw, max_labels, max_name, max_value, min_ts, max_ts, /)\n"
"--\n"
"\n"
"Every series of raw (an uncompressed WriteRequest, bytes-like) judged\n"
"against the sample limits: (number of series, codes), codes b'' when\n"
"every series is valid, else one byte a series (a problem code of\n"
"sealgw.signals._samplecheck, 0 for a valid one); None when raw is not in\n"
"the shape handled (the caller then judges the protobuf objects).");

static PyObject *
check_samples(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    limits_t limits;
    if (!PyArg_ParseTuple(args, "y*nnnLL:check_samples", &view, &limits.max_labels,
                          &limits.max_name, &limits.max_value, &limits.min_ts,
                          &limits.max_ts)) {
        return NULL;
    }
    Py_ssize_t count = 0;
    unsigned char *codes = NULL;
    PyObject *result = NULL;
    switch (limit_body((const unsigned char *)view.buf, (size_t)view.len, &limits, &count,
                       &codes)) {
    case 0:
        if (codes == NULL) {
            result = Py_BuildValue("(ny#)", count, "", (Py_ssize_t)0);
        }
        else {
            result = Py_BuildValue("(ny#)", count, (const char *)codes, count);
        }
        break;
    case 1:
        result = Py_NewRef(Py_None);
        break;
    default:
        break; /* the exception is set */
    }
    PyMem_Free(codes);
    PyBuffer_Release(&view);
    return result;
}

/* --- convert_v2: remote write 2.0 written as 1.0 ---------------------- */

/* The fields of io.prometheus.write.v2 read here, as one-byte tags. */
#define V2_SYMBOLS 0x22      /* Request.symbols: field 4, length-delimited */
#define V2_TIMESERIES 0x2A   /* Request.timeseries: field 5 */
#define V2_LABELS_REFS 0x0A  /* TimeSeries.labels_refs: field 1, packed */
#define V2_SAMPLES 0x12      /* TimeSeries.samples: field 2 */
#define V2_HISTOGRAMS 0x1A   /* TimeSeries.histograms: field 3 */
#define V2_EXEMPLARS 0x22    /* TimeSeries.exemplars: field 4 */
#define V2_METADATA 0x2A     /* TimeSeries.metadata: field 5 */
#define V2_CREATED 0x30      /* TimeSeries.created_timestamp: field 6, varint */
#define V2_EXEMPLAR_VALUE 0x11     /* Exemplar.value: field 2, 64-bit */
#define V2_EXEMPLAR_TIMESTAMP 0x18 /* Exemplar.timestamp: field 3, varint */
#define V2_METADATA_TYPE 0x08      /* Metadata.type: field 1, varint */
#define V2_METADATA_HELP 0x18      /* Metadata.help_ref: field 3, varint */
#define V2_METADATA_UNIT 0x20      /* Metadata.unit_ref: field 4, varint */

/* What 1.0 writes them as. */
#define V1_SAMPLES 0x12     /* TimeSeries.samples: field 2, the same Sample */
#define V1_EXEMPLARS 0x1A   /* TimeSeries.exemplars: field 3 */
#define V1_HISTOGRAMS 0x22  /* TimeSeries.histograms: field 4, the same fields */
#define V1_METADATA 0x1A    /* WriteRequest.metadata: field 3 */
#define V1_METADATA_TYPE 0x08
#define V1_METADATA_FAMILY 0x12
#define V1_METADATA_HELP 0x22
#define V1_METADATA_UNIT 0x2A

typedef struct {
    const unsigned char *data;
    size_t len;
} span_t;

/* Growable arrays of the walk, freed by convert_v2. */
typedef struct {
    span_t *symbols;
    size_t nsymbols, symbols_cap;
    uint32_t *refs; /* one series' labels_refs, then sorted as pairs */
    size_t refs_cap;
    size_t *seen;   /* the metadata records written, as offsets: a hash set */
    size_t seen_cap;
    size_t nseen;
    uint32_t *scratch; /* room for sort_pairs to merge through */
    size_t scratch_cap;
    uint64_t expanded; /* the bytes of every label the references name */
    uint64_t limit;
    Py_ssize_t samples, histograms, exemplars;
} walk_t;

/* Grow *array of *cap items of size to hold need: 0, or -1 (no memory;
   nothing set: the caller steps aside). */
static int
grow(void **array, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) {
        if (cap2 > ((size_t)PY_SSIZE_T_MAX / size) / 2) {
            return -1;
        }
        cap2 *= 2;
    }
    void *bigger = PyMem_Realloc(*array, cap2 * size);
    if (bigger == NULL) {
        return -1;
    }
    *array = bigger;
    *cap = cap2;
    return 0;
}

/* The references packed in raw[start:stop] appended to walk->refs from
   *n: 0, or -1 for a varint that does not read, a reference past the
   symbols table or a list too long. */
static int
read_refs(const unsigned char *raw, size_t start, size_t stop, walk_t *walk, size_t *n)
{
    size_t pos = start;
    while (pos < stop) {
        uint64_t ref;
        if (raw[pos] < 0x80) {
            ref = raw[pos++];
        }
        else if (read_varint(raw, &pos, stop, &ref) < 0) {
            return -1;
        }
        if (ref >= walk->nsymbols || ref > UINT32_MAX) {
            return -1;
        }
        if (grow((void **)&walk->refs, &walk->refs_cap, *n + 1, sizeof(uint32_t)) < 0) {
            return -1;
        }
        walk->refs[(*n)++] = (uint32_t)ref;
    }
    return 0;
}

static inline size_t
field_size(size_t length)
{
    return 1 + varint_size(length) + length;
}

static inline unsigned char *
write_field(unsigned char *w, unsigned char tag, const unsigned char *data, size_t length)
{
    *w++ = tag;
    w = write_varint(w, length);
    memcpy(w, data, length);
    return w + length;
}

/* A 1.0 Label's payload (name, then value) of symbols name and value. */
static inline size_t
label_size(const span_t *name, const span_t *value)
{
    return field_size(name->len) + field_size(value->len);
}

static unsigned char *
write_label(unsigned char *w, const span_t *name, const span_t *value)
{
    *w++ = LABELS;
    w = write_varint(w, label_size(name, value));
    w = write_field(w, LABEL_NAME, name->data, name->len);
    return write_field(w, LABEL_VALUE, value->data, value->len);
}

/* One length-delimited or varint field of a message at raw[*pos], within
   stop: its tag, and its payload raw[*start:*end] (a varint's own bytes
   for a varint, eight bytes for a 64-bit one).  0, or -1 when it does not
   read or is of a kind this shape has none of. */
static int
any_field(const unsigned char *raw, size_t *pos, size_t stop, unsigned char *tag,
          size_t *start, size_t *end)
{
    if (*pos >= stop) {
        return -1;
    }
    *tag = raw[*pos];
    if (*tag & 0x80) {
        return -1; /* a field past 15: none here */
    }
    size_t p = *pos + 1;
    uint64_t ignored;
    size_t length;
    switch (*tag & 0x07) {
    case 0:
        *start = p;
        if (read_varint(raw, &p, stop, &ignored) < 0) {
            return -1;
        }
        break;
    case 1:
        if (stop - p < 8) {
            return -1;
        }
        *start = p;
        p += 8;
        break;
    case 2:
        if (read_length(raw, &p, stop, &length) < 0) {
            return -1;
        }
        *start = p;
        p += length;
        break;
    default:
        return -1;
    }
    *end = p;
    *pos = p;
    return 0;
}

/* An exemplar's payload raw[start:stop] as 1.0's: its references
   (read into walk->refs from base, after the series' own) become labels,
   its value and timestamp pass as they are.  With w NULL only measured,
   and its labels counted in walk->expanded.  0 with *size set, or -1
   when not of the shape. */
static int
exemplar_v1(const unsigned char *raw, size_t start, size_t stop, walk_t *walk, size_t base,
            unsigned char *w, size_t *size)
{
    size_t total = 0;
    size_t pos = start;
    while (pos < stop) {
        unsigned char tag;
        size_t from, to;
        if (any_field(raw, &pos, stop, &tag, &from, &to) < 0) {
            return -1;
        }
        if (tag == V2_LABELS_REFS) {
            size_t n = base;
            if (read_refs(raw, from, to, walk, &n) < 0 || (n - base) % 2) {
                return -1;
            }
            for (size_t i = base; i < n; i += 2) {
                const span_t *name = &walk->symbols[walk->refs[i]];
                const span_t *value = &walk->symbols[walk->refs[i + 1]];
                size_t one = label_size(name, value);
                if (w == NULL) {
                    walk->expanded += name->len + value->len;
                }
                else {
                    w = write_label(w, name, value);
                }
                total += field_size(one);
            }
        }
        else if (tag == V2_EXEMPLAR_VALUE || tag == V2_EXEMPLAR_TIMESTAMP) {
            size_t length = to - (from - 1);
            if (w != NULL) {
                memcpy(w, raw + from - 1, length);
                w += length;
            }
            total += length;
        }
        else {
            return -1;
        }
    }
    *size = total;
    return 0;
}

static inline int
pair_before(const walk_t *walk, uint32_t a, uint32_t b)
{
    const span_t *x = &walk->symbols[a];
    const span_t *y = &walk->symbols[b];
    return compare(x->data, x->len, y->data, y->len) < 0;
}

/* Sort the count/2 (name, value) pairs at pairs by name, stably: as they
   are when already sorted (what senders write), by insertion while few,
   else by merging through walk->scratch, so that a series of many labels
   in reverse order costs n log n, not n squared.  0, or -1 for no memory
   (the caller steps aside). */
static int
sort_pairs(walk_t *walk, uint32_t *pairs, size_t count)
{
    size_t npairs = count / 2;
    size_t i = 1;
    while (i < npairs && !pair_before(walk, pairs[2 * i], pairs[2 * i - 2])) {
        i++;
    }
    if (i >= npairs) {
        return 0;
    }
    if (npairs <= 32) {
        for (i = 1; i < npairs; i++) {
            uint32_t name = pairs[2 * i], value = pairs[2 * i + 1];
            size_t j = 2 * i;
            while (j > 0 && pair_before(walk, name, pairs[j - 2])) {
                pairs[j] = pairs[j - 2];
                pairs[j + 1] = pairs[j - 1];
                j -= 2;
            }
            pairs[j] = name;
            pairs[j + 1] = value;
        }
        return 0;
    }
    if (grow((void **)&walk->scratch, &walk->scratch_cap, count, sizeof(uint32_t)) < 0) {
        return -1;
    }
    uint32_t *from = pairs, *to = walk->scratch;
    for (size_t width = 1; width < npairs; width *= 2) {
        for (size_t low = 0; low < npairs; low += 2 * width) {
            size_t mid = low + width < npairs ? low + width : npairs;
            size_t high = low + 2 * width < npairs ? low + 2 * width : npairs;
            size_t left = low, right = mid, k = low;
            while (left < mid || right < high) {
                size_t take;
                /* The left one unless the right one comes strictly
                   before it: equal names keep their order. */
                if (left < mid
                    && (right >= high || !pair_before(walk, from[2 * right], from[2 * left]))) {
                    take = left++;
                }
                else {
                    take = right++;
                }
                to[2 * k] = from[2 * take];
                to[2 * k + 1] = from[2 * take + 1];
                k++;
            }
        }
        uint32_t *swap = from;
        from = to;
        to = swap;
    }
    if (from != pairs) {
        memcpy(pairs, from, count * sizeof(uint32_t));
    }
    return 0;
}

static inline uint64_t
hash_bytes(const unsigned char *data, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h = (h ^ data[i]) * 1099511628211ULL;
    }
    return h;
}

/* Whether the metadata record out[at:at+len] was written before (then it
   is not kept); records are remembered by their offset+1 in an open
   addressing table.  0 new, 1 seen, -1 no memory. */
static int
seen_before(walk_t *walk, buffer_t *out, size_t at, size_t len)
{
    if ((walk->nseen + 1) * 2 > walk->seen_cap) {
        size_t cap = walk->seen_cap ? walk->seen_cap * 2 : 64;
        size_t *table = PyMem_Calloc(cap, sizeof(size_t));
        if (table == NULL) {
            return -1;
        }
        for (size_t i = 0; i < walk->seen_cap; i++) {
            size_t entry = walk->seen[i];
            if (entry) {
                const unsigned char *record = (const unsigned char *)PyBytes_AS_STRING(out->bytes) + entry - 1;
                size_t record_len = 0; /* set by read_length */
                size_t p = 1;
                read_length(record, &p, out->len - (entry - 1), &record_len);
                uint64_t h = hash_bytes(record, p + record_len) & (cap - 1);
                while (table[h]) {
                    h = (h + 1) & (cap - 1);
                }
                table[h] = entry;
            }
        }
        PyMem_Free(walk->seen);
        walk->seen = table;
        walk->seen_cap = cap;
    }
    const unsigned char *base = (const unsigned char *)PyBytes_AS_STRING(out->bytes);
    uint64_t h = hash_bytes(base + at, len) & (walk->seen_cap - 1);
    while (walk->seen[h]) {
        size_t other = walk->seen[h] - 1;
        size_t p = other + 1, other_len = 0;
        read_length(base, &p, out->len, &other_len);
        size_t whole = p + other_len - other;
        if (whole == len && memcmp(base + other, base + at, len) == 0) {
            return 1;
        }
        h = (h + 1) & (walk->seen_cap - 1);
    }
    walk->seen[h] = at + 1;
    walk->nseen++;
    return 0;
}

/* The metadata raw[start:stop] of a series whose family (the value of its
   first __name__) is the symbol first_name (SIZE_MAX for none), as a 1.0
   MetricMetadata record appended to meta, unless it says nothing, names
   no family or was written before.
   0, 1 when not of the shape, -1 with an exception set. */
static int
metadata_v1(const unsigned char *raw, size_t start, size_t stop, walk_t *walk,
            size_t first_name, buffer_t *meta)
{
    uint64_t type = 0, help = 0, unit = 0;
    size_t pos = start;
    while (pos < stop) {
        unsigned char tag = raw[pos];
        uint64_t *into;
        if (tag == V2_METADATA_TYPE) {
            into = &type;
        }
        else if (tag == V2_METADATA_HELP) {
            into = &help;
        }
        else if (tag == V2_METADATA_UNIT) {
            into = &unit;
        }
        else {
            return 1;
        }
        pos++;
        if (read_varint(raw, &pos, stop, into) < 0) {
            return 1;
        }
    }
    if (help >= walk->nsymbols || unit >= walk->nsymbols) {
        return 1;
    }
    /* Counted whether or not a record is written: each is built before
       it is found to repeat one. */
    walk->expanded += walk->symbols[help].len + walk->symbols[unit].len;
    if (walk->expanded > walk->limit) {
        return 1;
    }
    if ((type == 0 && help == 0 && unit == 0) || first_name == SIZE_MAX || first_name == 0) {
        return 0;
    }
    const span_t *family = &walk->symbols[first_name];
    size_t payload = 1 + varint_size(type) + field_size(family->len);
    if (help) {
        payload += field_size(walk->symbols[help].len);
    }
    if (unit) {
        payload += field_size(walk->symbols[unit].len);
    }
    if (reserve(meta, field_size(payload)) < 0) {
        return -1;
    }
    size_t at = meta->len;
    unsigned char *w = buffer_at(meta);
    *w++ = V1_METADATA;
    w = write_varint(w, payload);
    *w++ = V1_METADATA_TYPE;
    w = write_varint(w, (size_t)type);
    w = write_field(w, V1_METADATA_FAMILY, family->data, family->len);
    if (help) {
        w = write_field(w, V1_METADATA_HELP, walk->symbols[help].data, walk->symbols[help].len);
    }
    if (unit) {
        w = write_field(w, V1_METADATA_UNIT, walk->symbols[unit].data, walk->symbols[unit].len);
    }
    size_t len = (size_t)(w - buffer_at(meta));
    meta->len += len;
    int seen = seen_before(walk, meta, at, len);
    if (seen < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (seen) {
        meta->len = at;
    }
    return 0;
}

/* One 2.0 series, raw[start:stop], as a 1.0 TimeSeries field on out and
   its metadata on meta.  0, 1 when not of the shape (or a reference is
   bad, or the labels expand past the limit), -1 with an exception set. */
static int
series_v1(const unsigned char *raw, size_t start, size_t stop, walk_t *walk, buffer_t *out,
          buffer_t *meta)
{
    /* First the references, checked, and the size of everything. */
    size_t n = 0;
    size_t body = 0;
    size_t metadata_start = 0, metadata_stop = 0;
    int has_metadata = 0;
    size_t pos = start;
    while (pos < stop) {
        unsigned char tag;
        size_t from, to;
        if (any_field(raw, &pos, stop, &tag, &from, &to) < 0) {
            return 1;
        }
        switch (tag) {
        case V2_LABELS_REFS:
            if (read_refs(raw, from, to, walk, &n) < 0) {
                return 1;
            }
            break;
        case V2_SAMPLES:
            body += field_size(to - from);
            walk->samples++;
            break;
        case V2_HISTOGRAMS:
            body += field_size(to - from);
            walk->histograms++;
            break;
        case V2_EXEMPLARS:
            walk->exemplars++;
            break; /* measured below, once the labels' references are read */
        case V2_METADATA:
            has_metadata = 1;
            metadata_start = from;
            metadata_stop = to;
            break;
        case V2_CREATED:
            break; /* 1.0 has no place for it */
        default:
            return 1;
        }
    }
    if (n % 2) {
        return 1;
    }
    /* Pairs with an empty value are no label; the first __name__'s value
       names the family, as the objects read it, before sorting. */
    size_t first_name = SIZE_MAX;
    for (size_t i = 0; i < n; i += 2) {
        const span_t *name = &walk->symbols[walk->refs[i]];
        const span_t *value = &walk->symbols[walk->refs[i + 1]];
        walk->expanded += name->len + value->len;
        if (first_name == SIZE_MAX && name->len == METRIC_NAME_LEN
            && memcmp(name->data, METRIC_NAME, METRIC_NAME_LEN) == 0) {
            first_name = walk->refs[i + 1];
        }
        if (value->len) {
            body += field_size(label_size(name, value));
        }
    }
    if (sort_pairs(walk, walk->refs, n) < 0) {
        return 1;
    }
    /* Exemplars: their references read into walk->refs after the
       series' own. */
    pos = start;
    while (pos < stop) {
        unsigned char tag = 0;
        size_t from = 0, to = 0, size = 0;
        if (any_field(raw, &pos, stop, &tag, &from, &to) < 0) {
            return 1; /* read the same way above: cannot happen */
        }
        if (tag == V2_EXEMPLARS) {
            if (exemplar_v1(raw, from, to, walk, n, NULL, &size) < 0) {
                return 1;
            }
            body += field_size(size);
        }
    }
    if (walk->expanded > walk->limit) {
        return 1;
    }
    if (has_metadata) {
        int result = metadata_v1(raw, metadata_start, metadata_stop, walk, first_name, meta);
        if (result != 0) {
            return result;
        }
    }
    if (reserve(out, field_size(body)) < 0) {
        return -1;
    }
    unsigned char *w = buffer_at(out);
    *w++ = TIMESERIES;
    w = write_varint(w, body);
    for (size_t i = 0; i < n; i += 2) {
        const span_t *value = &walk->symbols[walk->refs[i + 1]];
        if (value->len) {
            w = write_label(w, &walk->symbols[walk->refs[i]], value);
        }
    }
    for (int pass = 0; pass < 3; pass++) {
        /* Samples, exemplars, histograms: 1.0's order. */
        pos = start;
        while (pos < stop) {
            unsigned char tag = 0;
            size_t from = 0, to = 0, size = 0;
            if (any_field(raw, &pos, stop, &tag, &from, &to) < 0) {
                return 1; /* read the same way above: cannot happen */
            }
            if (pass == 0 && tag == V2_SAMPLES) {
                w = write_field(w, V1_SAMPLES, raw + from, to - from);
            }
            else if (pass == 1 && tag == V2_EXEMPLARS) {
                uint64_t before = walk->expanded;
                exemplar_v1(raw, from, to, walk, n, NULL, &size);
                walk->expanded = before;
                *w++ = V1_EXEMPLARS;
                w = write_varint(w, size);
                exemplar_v1(raw, from, to, walk, n, w, &size);
                w += size;
            }
            else if (pass == 2 && tag == V2_HISTOGRAMS) {
                w = write_field(w, V1_HISTOGRAMS, raw + from, to - from);
            }
        }
    }
    out->len = (size_t)(w - (unsigned char *)PyBytes_AS_STRING(out->bytes));
    return 0;
}

/* The whole request: 0 with out holding the 1.0 request, 1 when not of
   the shape, -1 with an exception set. */
static int
convert_body(const unsigned char *raw, size_t end, walk_t *walk, buffer_t *out)
{
    size_t pos = 0;
    while (pos < end) {
        unsigned char tag;
        size_t start, stop;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1;
        }
        if (tag == V2_SYMBOLS) {
            if (grow((void **)&walk->symbols, &walk->symbols_cap, walk->nsymbols + 1,
                     sizeof(span_t)) < 0) {
                return 1;
            }
            walk->symbols[walk->nsymbols].data = raw + start;
            walk->symbols[walk->nsymbols].len = stop - start;
            walk->nsymbols++;
        }
        else if (tag != V2_TIMESERIES) {
            return 1;
        }
        pos = stop;
    }
    if (walk->nsymbols && walk->symbols[0].len != 0) {
        return 1;
    }
    buffer_t meta = {PyBytes_FromStringAndSize(NULL, 256), 0, 256};
    if (meta.bytes == NULL) {
        return -1;
    }
    int result = 0;
    pos = 0;
    while (pos < end && result == 0) {
        unsigned char tag = 0;
        size_t start = 0, stop = end;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            result = 1; /* read the same way above: cannot happen */
            break;
        }
        if (tag == V2_TIMESERIES) {
            result = series_v1(raw, start, stop, walk, out, &meta);
        }
        pos = stop;
    }
    if (result == 0 && meta.len) {
        if (reserve(out, meta.len) < 0) {
            result = -1;
        }
        else {
            memcpy(buffer_at(out), PyBytes_AS_STRING(meta.bytes), meta.len);
            out->len += meta.len;
        }
    }
    Py_XDECREF(meta.bytes);
    return result;
}

PyDoc_STRVAR(convert_v2_doc,
"convert_v2(raw, limit, /)\n"
"--\n"
"\n"
"raw (an uncompressed io.prometheus.write.v2.Request, bytes-like, already\n"
"parsed once by protobuf) as a remote write 1.0 WriteRequest: (bytes,\n"
"samples, histograms, exemplars).  None when raw is not in the shape\n"
"handled, a reference is bad, or the labels and metadata the references\n"
"name come to more than limit bytes: the caller then checks and converts the protobuf\n"
"objects, which says what is wrong.");

static PyObject *
convert_v2(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    unsigned long long limit;
    if (!PyArg_ParseTuple(args, "y*K:convert_v2", &view, &limit)) {
        return NULL;
    }
    walk_t walk;
    memset(&walk, 0, sizeof(walk));
    walk.limit = limit;
    size_t end = (size_t)view.len;
    PyObject *result = NULL;
    /* Room for the body twice over (2.0 writes each string once); more if
       needed. */
    buffer_t out = {NULL, 0, 2 * end + 64};
    out.bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out.cap);
    if (out.bytes != NULL) {
        switch (convert_body((const unsigned char *)view.buf, end, &walk, &out)) {
        case 0:
            if (_PyBytes_Resize(&out.bytes, (Py_ssize_t)out.len) == 0) {
                result = Py_BuildValue("(Nnnn)", out.bytes, walk.samples, walk.histograms,
                                       walk.exemplars);
                out.bytes = NULL;
            }
            break;
        case 1:
            result = Py_NewRef(Py_None);
            break;
        default:
            break; /* the exception is set */
        }
    }
    Py_XDECREF(out.bytes);
    PyMem_Free(walk.symbols);
    PyMem_Free(walk.refs);
    PyMem_Free(walk.scratch);
    PyMem_Free(walk.seen);
    PyBuffer_Release(&view);
    return result;
}

/* --- relabel_v2: label actions on a 2.0 request, through its symbols --- */

typedef struct {
    const unsigned char *name;
    size_t name_len;
    uint32_t name_ref;
    uint32_t value_ref;
} add_ref_t;

typedef struct {
    const add_ref_t *adds;
    Py_ssize_t nadds;
    const name_t *drop;
    Py_ssize_t ndrop;
} ref_actions_t;

static inline int
named(const unsigned char *name, size_t len, const name_t *names, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        if (names[i].len == len && memcmp(names[i].name, name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

static inline int
is_added(const unsigned char *name, size_t len, const ref_actions_t *actions)
{
    for (Py_ssize_t i = 0; i < actions->nadds; i++) {
        if (actions->adds[i].name_len == len && memcmp(actions->adds[i].name, name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Sort the count/2 (name, value) pairs at pairs by name (sort_pairs), and
   say whether a name is there twice: 1 if so, 0 if not, -1 for no memory. */
static int
sorted_pairs_repeat(walk_t *walk, uint32_t *pairs, size_t count)
{
    if (sort_pairs(walk, pairs, count) < 0) {
        return -1;
    }
    for (size_t i = 2; i < count; i += 2) {
        const span_t *a = &walk->symbols[pairs[i - 2]];
        const span_t *b = &walk->symbols[pairs[i]];
        if (compare(a->data, a->len, b->data, b->len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* One 2.0 series, raw[start:stop], with the actions applied, onto out as
   a whole Request.timeseries field: its labels_refs first, then its other
   fields as they were.  *changed set when its labels differ.  0, 1 when
   not of the shape (references not packed, a bad reference, a name
   twice), -1 with an exception set. */
static int
relabel_series_v2(const unsigned char *raw, size_t start, size_t stop, walk_t *walk,
                  const ref_actions_t *actions, buffer_t *out, int *changed)
{
    size_t n = 0;
    size_t rest = 0; /* the bytes of the other fields */
    size_t pos = start;
    while (pos < stop) {
        unsigned char tag;
        size_t from, to;
        size_t at = pos;
        if (any_field(raw, &pos, stop, &tag, &from, &to) < 0) {
            return 1;
        }
        if (tag == V2_LABELS_REFS) {
            if (read_refs(raw, from, to, walk, &n) < 0) {
                return 1;
            }
        }
        else if ((tag >> 3) == 1) {
            return 1; /* labels_refs not packed */
        }
        else {
            rest += pos - at;
        }
    }
    if (n % 2) {
        return 1;
    }
    /* A name twice is left to the objects, which keep its last value,
       empty or not: the old pairs' names sorted (a copy after them) must
       all differ. */
    if (grow((void **)&walk->refs, &walk->refs_cap, 2 * n, sizeof(uint32_t)) < 0) {
        return 1;
    }
    if (n) {
        memcpy(walk->refs + n, walk->refs, n * sizeof(uint32_t));
        if (sorted_pairs_repeat(walk, walk->refs + n, n) != 0) {
            return 1;
        }
    }
    /* The new pairs after the old ones in walk->refs. */
    size_t kept = n;
    for (size_t i = 0; i < n; i += 2) {
        const span_t *name = &walk->symbols[walk->refs[i]];
        if (walk->symbols[walk->refs[i + 1]].len == 0
            || named(name->data, name->len, actions->drop, actions->ndrop)
            || is_added(name->data, name->len, actions)) {
            continue;
        }
        if (grow((void **)&walk->refs, &walk->refs_cap, kept + 2, sizeof(uint32_t)) < 0) {
            return 1;
        }
        walk->refs[kept] = walk->refs[i];
        walk->refs[kept + 1] = walk->refs[i + 1];
        kept += 2;
    }
    for (Py_ssize_t i = 0; i < actions->nadds; i++) {
        if (grow((void **)&walk->refs, &walk->refs_cap, kept + 2, sizeof(uint32_t)) < 0) {
            return 1;
        }
        walk->refs[kept] = actions->adds[i].name_ref;
        walk->refs[kept + 1] = actions->adds[i].value_ref;
        kept += 2;
    }
    uint32_t *pairs = walk->refs + n;
    size_t count = kept - n;
    /* Sorted by name; the old names all differ and no added one is among
       those kept, so no name is there twice. */
    if (sorted_pairs_repeat(walk, pairs, count) < 0) {
        return 1;
    }
    size_t packed = 0;
    for (size_t i = 0; i < count; i++) {
        packed += varint_size(pairs[i]);
    }
    if (count != n || (n && memcmp(pairs, walk->refs, n * sizeof(uint32_t)) != 0)) {
        *changed = 1;
    }
    size_t body = (count ? field_size(packed) : 0) + rest;
    if (reserve(out, field_size(body)) < 0) {
        return -1;
    }
    unsigned char *w = buffer_at(out);
    *w++ = V2_TIMESERIES;
    w = write_varint(w, body);
    if (count) {
        *w++ = V2_LABELS_REFS;
        w = write_varint(w, packed);
        for (size_t i = 0; i < count; i++) {
            w = write_varint(w, pairs[i]);
        }
    }
    pos = start;
    while (pos < stop) {
        unsigned char tag = 0;
        size_t from = 0, to = 0;
        size_t at = pos;
        if (any_field(raw, &pos, stop, &tag, &from, &to) < 0) {
            return 1; /* read the same way above: cannot happen */
        }
        if (tag != V2_LABELS_REFS) {
            memcpy(w, raw + at, pos - at);
            w += pos - at;
        }
    }
    out->len = (size_t)(w - (unsigned char *)PyBytes_AS_STRING(out->bytes));
    return 0;
}

/* The whole request: 0 with out holding it relabelled (tail, the new
   symbols, at its end), 1 when not of the shape, -1 with an exception
   set. */
static int
relabel_body_v2(const unsigned char *raw, size_t end, walk_t *walk,
                const ref_actions_t *actions, const Py_buffer *tail, buffer_t *out,
                int *changed)
{
    size_t pos = 0;
    while (pos < end) {
        unsigned char tag;
        size_t start, stop;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1;
        }
        if (tag == V2_SYMBOLS) {
            if (grow((void **)&walk->symbols, &walk->symbols_cap, walk->nsymbols + 1,
                     sizeof(span_t)) < 0) {
                return 1;
            }
            walk->symbols[walk->nsymbols].data = raw + start;
            walk->symbols[walk->nsymbols].len = stop - start;
            walk->nsymbols++;
        }
        else if (tag != V2_TIMESERIES) {
            return 1;
        }
        pos = stop;
    }
    /* The added references name the symbols of tail, after these. */
    size_t tail_pos = 0;
    const unsigned char *tail_data = tail->buf;
    size_t tail_end = (size_t)tail->len;
    while (tail_pos < tail_end) {
        unsigned char tag;
        size_t start, stop;
        if (next_field(tail_data, tail_pos, tail_end, &tag, &start, &stop) < 0
            || tag != V2_SYMBOLS
            || grow((void **)&walk->symbols, &walk->symbols_cap, walk->nsymbols + 1,
                    sizeof(span_t)) < 0) {
            return 1;
        }
        walk->symbols[walk->nsymbols].data = tail_data + start;
        walk->symbols[walk->nsymbols].len = stop - start;
        walk->nsymbols++;
        tail_pos = stop;
    }
    for (Py_ssize_t i = 0; i < actions->nadds; i++) {
        if (actions->adds[i].name_ref >= walk->nsymbols
            || actions->adds[i].value_ref >= walk->nsymbols) {
            return 1;
        }
    }
    pos = 0;
    while (pos < end) {
        unsigned char tag = 0;
        size_t start = 0, stop = end;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1; /* read the same way above: cannot happen */
        }
        if (tag == V2_TIMESERIES) {
            int result = relabel_series_v2(raw, start, stop, walk, actions, out, changed);
            if (result != 0) {
                return result;
            }
        }
        else {
            if (reserve(out, stop - pos) < 0) {
                return -1;
            }
            memcpy(buffer_at(out), raw + pos, stop - pos);
            out->len += stop - pos;
        }
        pos = stop;
    }
    if (reserve(out, tail_end) < 0) {
        return -1;
    }
    memcpy(buffer_at(out), tail_data, tail_end);
    out->len += tail_end;
    return 0;
}

PyDoc_STRVAR(relabel_v2_doc,
"relabel_v2(raw, adds, drop, tail, /)\n"
"--\n"
"\n"
"raw (an uncompressed io.prometheus.write.v2.Request, bytes-like) with the\n"
"labels of adds set on every series and the names in drop deleted, labels\n"
"sorted by name and those with an empty value deleted; tail (encoded\n"
"symbols fields: the symbols adds refers to that raw lacks) appended.\n"
"\n"
"adds: a tuple of (name, name_ref, value_ref), sorted by name; drop: a\n"
"tuple of names (bytes).  Returns (bytes, changed), or None when raw is\n"
"not in the shape handled (the caller then uses the protobuf objects).");

static PyObject *
relabel_v2(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view, tail;
    PyObject *adds_tuple, *drop_tuple;
    if (!PyArg_ParseTuple(args, "y*O!O!y*:relabel_v2", &view, &PyTuple_Type, &adds_tuple,
                          &PyTuple_Type, &drop_tuple, &tail)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t nadds = PyTuple_GET_SIZE(adds_tuple);
    Py_ssize_t ndrop = PyTuple_GET_SIZE(drop_tuple);
    add_ref_t *adds = PyMem_New(add_ref_t, (size_t)(nadds ? nadds : 1));
    name_t *drop = PyMem_New(name_t, (size_t)(ndrop ? ndrop : 1));
    walk_t walk;
    memset(&walk, 0, sizeof(walk));
    buffer_t out = {NULL, 0, 0};
    if (adds == NULL || drop == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nadds; i++) {
        PyObject *item = PyTuple_GET_ITEM(adds_tuple, i);
        PyObject *name;
        unsigned long name_ref, value_ref;
        if (!PyTuple_Check(item)
            || !PyArg_ParseTuple(item, "Skk", &name, &name_ref, &value_ref)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "relabel_v2(): adds holds (name, ref, ref)");
            }
            goto done;
        }
        adds[i].name = (const unsigned char *)PyBytes_AS_STRING(name);
        adds[i].name_len = (size_t)PyBytes_GET_SIZE(name);
        adds[i].name_ref = (uint32_t)name_ref;
        adds[i].value_ref = (uint32_t)value_ref;
        if (name_ref > UINT32_MAX || value_ref > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "relabel_v2(): a reference past 32 bits");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < ndrop; i++) {
        PyObject *name = PyTuple_GET_ITEM(drop_tuple, i);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "relabel_v2(): drop holds names (bytes)");
            goto done;
        }
        drop[i].name = (const unsigned char *)PyBytes_AS_STRING(name);
        drop[i].len = (size_t)PyBytes_GET_SIZE(name);
    }
    ref_actions_t actions = {adds, nadds, drop, ndrop};
    size_t end = (size_t)view.len;
    /* The body, a few bytes of references a series, and the tail. */
    out.cap = end + end / 4 + (size_t)tail.len + 64;
    out.bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out.cap);
    if (out.bytes == NULL) {
        goto done;
    }
    int changed = 0;
    switch (relabel_body_v2((const unsigned char *)view.buf, end, &walk, &actions, &tail, &out,
                            &changed)) {
    case 0:
        if (_PyBytes_Resize(&out.bytes, (Py_ssize_t)out.len) == 0) {
            result = Py_BuildValue("(NO)", out.bytes, changed ? Py_True : Py_False);
            out.bytes = NULL;
        }
        break;
    case 1:
        result = Py_NewRef(Py_None);
        break;
    default:
        break; /* the exception is set */
    }

done:
    Py_XDECREF(out.bytes);
    PyMem_Free(adds);
    PyMem_Free(drop);
    PyMem_Free(walk.symbols);
    PyMem_Free(walk.refs);
    PyMem_Free(walk.scratch);
    PyMem_Free(walk.seen);
    PyBuffer_Release(&view);
    PyBuffer_Release(&tail);
    return result;
}

/* The value of the label named wanted in the series raw[pos:stop]: 0
   with *value and *value_len set (length 0 when it has none, or an empty
   one), or 1 when its labels are not sorted names and values only, or a
   label follows its samples when it has not the wanted one.  The same
   reading as _tenant_value() in tenant_split.py. */
static int
tenant_value(const unsigned char *raw, size_t pos, size_t stop, const unsigned char *wanted,
             size_t wanted_len, const unsigned char **value, size_t *value_len)
{
    const unsigned char *previous = NULL;
    size_t previous_len = 0;
    *value = raw;
    *value_len = 0;
    while (pos < stop && raw[pos] == LABELS) {
        label_t label;
        if (read_label(raw, pos, stop, &label) < 0) {
            return 1;
        }
        if (previous != NULL &&
            compare(label.name, label.name_len, previous, previous_len) <= 0) {
            return 1; /* unsorted or repeated: the objects decide */
        }
        previous = label.name;
        previous_len = label.name_len;
        if (compare(label.name, label.name_len, wanted, wanted_len) == 0) {
            *value = raw + label.end - label.value_len;
            *value_len = label.value_len;
            return 0;
        }
        pos = label.end;
    }
    return check_rest(raw, pos, stop) < 0 ? 1 : 0;
}

/* split_by_label(raw, name): see split_body below.  0 with the results
   set, 1 when raw is not of the shape, -1 with an exception set. */
static int
split_body(const unsigned char *raw, size_t end, const unsigned char *wanted, size_t wanted_len,
           Py_ssize_t max_series, PyObject *series, PyObject *first, PyObject *other,
           Py_ssize_t *count)
{
    size_t pos = 0;
    while (pos < end) {
        if (*count > max_series) {
            return 0; /* the caller refuses the request: no more work on it */
        }
        unsigned char tag;
        size_t start, stop;
        if (next_field(raw, pos, end, &tag, &start, &stop) < 0) {
            return 1;
        }
        PyObject *field = PyBytes_FromStringAndSize((const char *)raw + pos,
                                                    (Py_ssize_t)(stop - pos));
        if (field == NULL) {
            return -1;
        }
        PyObject *group;
        if (tag != TIMESERIES) {
            group = other;
        }
        else {
            const unsigned char *value;
            size_t value_len;
            if (tenant_value(raw, start, stop, wanted, wanted_len, &value, &value_len) != 0) {
                Py_DECREF(field);
                return 1;
            }
            PyObject *key = PyBytes_FromStringAndSize((const char *)value, (Py_ssize_t)value_len);
            if (key == NULL) {
                Py_DECREF(field);
                return -1;
            }
            group = PyDict_GetItemWithError(series, key); /* borrowed */
            if (group == NULL) {
                PyObject *index = PyErr_Occurred() ? NULL : PyLong_FromSsize_t(*count);
                group = index == NULL ? NULL : PyList_New(0);
                if (group == NULL || PyDict_SetItem(series, key, group) < 0 ||
                    PyDict_SetItem(first, key, index) < 0) {
                    Py_XDECREF(group);
                    Py_XDECREF(index);
                    Py_DECREF(key);
                    Py_DECREF(field);
                    return -1;
                }
                Py_DECREF(group); /* the dict holds it */
                Py_DECREF(index);
            }
            Py_DECREF(key);
            *count += 1;
        }
        int appended = PyList_Append(group, field);
        Py_DECREF(field);
        if (appended < 0) {
            return -1;
        }
        pos = stop;
    }
    return 0;
}

PyDoc_STRVAR(split_by_label_doc,
"split_by_label(raw, name, max_series) -> (series, first, other, count) or None\n\n"
"The series of raw (an uncompressed WriteRequest) grouped by the value of\n"
"the label name: series maps each value (b'' for none) to the series'\n"
"whole fields in order, first to the index of its first series; other\n"
"lists the fields that are not series; count is the series.  None when\n"
"raw is not of the shape (see sealgw.signals.tenant_split).  It stops\n"
"once count is past max_series (the request is then refused whole).");

static PyObject *
split_by_label(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view, name;
    Py_ssize_t max_series;
    if (!PyArg_ParseTuple(args, "y*y*n:split_by_label", &view, &name, &max_series)) {
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *series = PyDict_New();
    PyObject *first = PyDict_New();
    PyObject *other = PyList_New(0);
    Py_ssize_t count = 0;
    if (series != NULL && first != NULL && other != NULL) {
        switch (split_body((const unsigned char *)view.buf, (size_t)view.len,
                           (const unsigned char *)name.buf, (size_t)name.len, max_series,
                           series, first, other, &count)) {
        case 0:
            result = Py_BuildValue("(OOOn)", series, first, other, count);
            break;
        case 1:
            result = Py_NewRef(Py_None);
            break;
        default:
            break; /* the exception is set */
        }
    }
    Py_XDECREF(series);
    Py_XDECREF(first);
    Py_XDECREF(other);
    PyBuffer_Release(&name);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"split_by_label", split_by_label, METH_VARARGS, split_by_label_doc},
    {"relabel_encoded", (PyCFunction)(void (*)(void))relabel_encoded, METH_FASTCALL,
     relabel_encoded_doc},
    {"check_labels", check_labels, METH_O, check_labels_doc},
    {"check_samples", check_samples, METH_VARARGS, check_samples_doc},
    {"convert_v2", convert_v2, METH_VARARGS, convert_v2_doc},
    {"relabel_v2", relabel_v2, METH_VARARGS, relabel_v2_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot slots[] = {
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sealgw.signals._relabel_c",
    .m_doc = "The per-series loops of sealgw.signals._relabel, _labelcheck, _samplecheck and remote_write2, in C.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__relabel_c(void)
{
    return PyModuleDef_Init(&module);
}
