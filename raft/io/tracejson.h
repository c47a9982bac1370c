/* tracejson.h — trace records as JSON lines (docs/trace.md, docs/trace.schema.json).
 *
 * The core hands out struct raft_trace and struct raft_message; this file
 * renders them, and the host's own records (sends, receipts, client
 * requests, state), as one JSON object per line, outside the core. It uses
 * libc only (no libuv, no protobuf), so that the simulator links it too:
 * one writer and one schema for raftsim and kvd.
 *
 * A record is built in a caller's buffer: tj_begin(), fields, tj_end().
 * A record that does not fit is dropped whole (tj_end() returns 0) rather
 * than written as broken JSON.
 */
#ifndef RAFT_TRACEJSON_H
#define RAFT_TRACEJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

struct tj {
    char *buf;
    size_t size;
    size_t len;
    bool overflow;
    unsigned depth;     /* open nested objects and arrays */
    bool need_comma[8]; /* per depth: a member was written already */
};

/* Every record starts with these: time in milliseconds (virtual in the
 * simulator, Unix time in kvd), kind, node (0: the simulator itself) and
 * Raft group (0 when the host runs one). */
void tj_begin(struct tj *j, char *buf, size_t size, uint64_t t, const char *kind, uint64_t node,
              uint64_t group);
void tj_u64(struct tj *j, const char *key, uint64_t v);
void tj_bool(struct tj *j, const char *key, bool v);
void tj_str(struct tj *j, const char *key, const char *s);
void tj_strn(struct tj *j, const char *key, const char *s, size_t n);
/* Nested object or array under key (key NULL inside an array). */
void tj_open(struct tj *j, const char *key, char brace);
void tj_close(struct tj *j, char brace);
/* An array element. */
void tj_elem_u64(struct tj *j, uint64_t v);

/* A "state" record's log from..last as "log_from" and "log": runs of one
 * term, [first, last, term] each; term_at(ctx, i) gives index i's term. */
void tj_log_runs(struct tj *j, uint64_t from, uint64_t last,
                 uint64_t (*term_at)(const void *ctx, uint64_t i), const void *ctx);

/* Kind "rule": term, role, rule, cite, text, peer, index, fields. */
void tj_rule(struct tj *j, const struct raft_trace *t);
/* Kinds "send", "recv", "drop": id, from, to, type, term, and "msg" with the
 * type's own fields. */
void tj_message(struct tj *j, uint64_t id, const struct raft_message *m);
/* Close the record and add a newline. Returns its length, or 0 when it
 * did not fit (the buffer then holds nothing usable). */
size_t tj_end(struct tj *j);

/* Split a rule into its citation ("§5.2", "thesis §9.6", "UNSAFE §5.4.2")
 * and its text; *cite_len is 0 when the rule has no citation. */
void tj_split_rule(const char *rule, size_t *cite_len, const char **text);

#endif /* RAFT_TRACEJSON_H */
