/* tracejson.c — trace records as JSON lines; see tracejson.h. */
#include "tracejson.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void put(struct tj *j, const char *s, size_t n)
{
    if (j->overflow || j->len + n + 1 > j->size) {
        j->overflow = true;
        return;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static void putf(struct tj *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct tj *j, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        j->overflow = true;
        return;
    }
    put(j, tmp, (size_t)n);
}

/* JSON string contents. Bytes from 0x80 up pass through: the rules are
 * UTF-8 ("§") and so is what hosts give; control characters and the two
 * that JSON reserves are escaped. */
static void escaped(struct tj *j, const char *s, size_t n)
{
    put(j, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        put(j, s + run, i - run);
        run = i + 1;
        if (c == '"')
            put(j, "\\\"", 2);
        else if (c == '\\')
            put(j, "\\\\", 2);
        else if (c == '\n')
            put(j, "\\n", 2);
        else
            putf(j, "\\u%04x", c);
    }
    put(j, s + run, n - run);
    put(j, "\"", 1);
}

static void key(struct tj *j, const char *k)
{
    if (j->need_comma[j->depth])
        put(j, ",", 1);
    j->need_comma[j->depth] = true;
    if (k) {
        escaped(j, k, strlen(k));
        put(j, ":", 1);
    }
}

void tj_begin(struct tj *j, char *buf, size_t size, uint64_t t, const char *kind, uint64_t node,
              uint64_t group)
{
    memset(j, 0, sizeof(*j));
    j->buf = buf;
    j->size = size;
    if (size)
        buf[0] = '\0';
    put(j, "{", 1);
    tj_u64(j, "t", t);
    tj_str(j, "kind", kind);
    tj_u64(j, "node", node);
    tj_u64(j, "group", group);
}

void tj_u64(struct tj *j, const char *k, uint64_t v)
{
    key(j, k);
    putf(j, "%llu", (unsigned long long)v);
}

void tj_bool(struct tj *j, const char *k, bool v)
{
    key(j, k);
    put(j, v ? "true" : "false", v ? 4 : 5);
}

void tj_strn(struct tj *j, const char *k, const char *s, size_t n)
{
    key(j, k);
    escaped(j, s, n);
}

void tj_str(struct tj *j, const char *k, const char *s)
{
    tj_strn(j, k, s ? s : "", s ? strlen(s) : 0);
}

void tj_open(struct tj *j, const char *k, char brace)
{
    key(j, k);
    put(j, &brace, 1);
    if (j->depth + 1 >= sizeof(j->need_comma) / sizeof(j->need_comma[0])) {
        j->overflow = true;
        return;
    }
    j->need_comma[++j->depth] = false;
}

void tj_close(struct tj *j, char brace)
{
    put(j, &brace, 1);
    if (j->depth > 0)
        j->depth--;
}

void tj_elem_u64(struct tj *j, uint64_t v)
{
    tj_u64(j, NULL, v);
}

void tj_split_rule(const char *rule, size_t *cite_len, const char **text)
{
    const char *sect = strstr(rule, "\xc2\xa7"); /* § */
    const char *space = sect ? strchr(sect, ' ') : NULL;
    if (!space) {
        *cite_len = 0;
        *text = rule;
        return;
    }
    *cite_len = (size_t)(space - rule);
    *text = space + 1;
}

void tj_rule(struct tj *j, const struct raft_trace *t)
{
    size_t cite_len;
    const char *text;
    tj_split_rule(t->rule, &cite_len, &text);
    tj_u64(j, "term", t->term);
    tj_str(j, "role", raft_role_name(t->role));
    tj_str(j, "rule", t->rule);
    tj_strn(j, "cite", t->rule, cite_len);
    tj_str(j, "text", text);
    if (t->peer)
        tj_u64(j, "peer", t->peer);
    if (t->index)
        tj_u64(j, "index", t->index);
    if (t->value_name) {
        tj_open(j, "fields", '{');
        tj_u64(j, t->value_name, t->value);
        tj_close(j, '}');
    }
}

void tj_message(struct tj *j, uint64_t id, const struct raft_message *m)
{
    tj_u64(j, "id", id);
    tj_u64(j, "from", m->from);
    tj_u64(j, "to", m->to);
    tj_str(j, "type", raft_message_type_name(m->type));
    tj_u64(j, "term", m->term);
    tj_open(j, "msg", '{');
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        tj_u64(j, "last_log_index", m->request_vote.last_log_index);
        tj_u64(j, "last_log_term", m->request_vote.last_log_term);
        tj_bool(j, "pre_vote", m->request_vote.pre_vote);
        if (m->request_vote.leadership_transfer)
            tj_bool(j, "leadership_transfer", true);
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        tj_bool(j, "vote_granted", m->request_vote_result.vote_granted);
        tj_bool(j, "pre_vote", m->request_vote_result.pre_vote);
        break;
    case RAFT_MSG_APPEND_ENTRIES: {
        const struct raft_append_entries *ae = &m->append_entries;
        tj_u64(j, "prev_log_index", ae->prev_log_index);
        tj_u64(j, "prev_log_term", ae->prev_log_term);
        tj_u64(j, "leader_commit", ae->leader_commit);
        tj_u64(j, "entries", ae->n_entries);
        if (ae->n_entries) {
            tj_u64(j, "first_index", ae->entries[0].index);
            tj_u64(j, "last_index", ae->entries[ae->n_entries - 1].index);
        }
        break;
    }
    case RAFT_MSG_APPEND_ENTRIES_RESULT: {
        const struct raft_append_entries_result *ar = &m->append_entries_result;
        tj_bool(j, "success", ar->success);
        if (ar->success) {
            tj_u64(j, "match_index", ar->match_index);
        } else {
            tj_u64(j, "rejected_index", ar->rejected_index);
            tj_u64(j, "conflict_index", ar->conflict_index);
            tj_u64(j, "conflict_term", ar->conflict_term);
        }
        tj_u64(j, "last_log_index", ar->last_log_index);
        break;
    }
    case RAFT_MSG_TIMEOUT_NOW:
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        tj_u64(j, "last_index", m->install_snapshot.last_index);
        tj_u64(j, "last_term", m->install_snapshot.last_term);
        tj_u64(j, "offset", m->install_snapshot.offset);
        tj_u64(j, "len", m->install_snapshot.len);
        tj_bool(j, "done", m->install_snapshot.done);
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT_RESULT:
        tj_u64(j, "last_index", m->install_snapshot_result.last_index);
        tj_u64(j, "next_offset", m->install_snapshot_result.next_offset);
        tj_bool(j, "done", m->install_snapshot_result.done);
        tj_bool(j, "rejected", m->install_snapshot_result.rejected);
        break;
    }
    tj_close(j, '}');
}

void tj_log_runs(struct tj *j, uint64_t from, uint64_t last,
                 uint64_t (*term_at)(const void *ctx, uint64_t i), const void *ctx)
{
    tj_u64(j, "log_from", from);
    tj_open(j, "log", '[');
    for (uint64_t i = from; i <= last;) {
        uint64_t t = term_at(ctx, i), k = i;
        while (k < last && term_at(ctx, k + 1) == t)
            k++;
        tj_open(j, NULL, '[');
        tj_elem_u64(j, i);
        tj_elem_u64(j, k);
        tj_elem_u64(j, t);
        tj_close(j, ']');
        i = k + 1;
    }
    tj_close(j, ']');
}

size_t tj_end(struct tj *j)
{
    put(j, "}\n", 2);
    if (j->overflow || j->depth != 0) {
        if (j->size)
            j->buf[0] = '\0';
        return 0;
    }
    return j->len;
}
