/* tracecheck — validate JSON-lines trace records against docs/trace.schema.json.
 *
 *   tracecheck [--schema FILE] [--rules FILE] [--pairs] [--expect-kinds LIST] [FILE...]
 *
 * Reads records one a line (stdin when no FILE) and checks each against the
 * schema. The schema interpreter understands only the JSON Schema keywords
 * that file uses and refuses a schema with any other, so that a keyword
 * added there cannot be silently ignored here. Beyond the schema:
 *   - a rule's cite and text together are its rule;
 *   - --rules FILE: every rule is listed (in backquotes) in that file;
 *   - --pairs: every recv and drop matches an earlier send of the same
 *     group, sender and id, with the same type, receiver and term;
 *   - --pairs-unordered: the same, the send anywhere in the input (the
 *     merged files of several kvd nodes, whose clocks order records only
 *     to the millisecond);
 *   - --expect-kinds LIST: each kind in the comma list occurs.
 * Exits 0 when every record is valid, 1 otherwise (the first errors are
 * printed), 2 on bad usage.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *root_schema;
static unsigned errors;
static unsigned long lineno;
static const char *path;

static void err(const char *where, const char *what, const char *detail)
{
    if (++errors <= 10)
        fprintf(stderr, "%s:%lu: %s: %s%s%s\n", path, lineno, where[0] ? where : "(record)", what,
                detail ? " " : "", detail ? detail : "");
}

static bool type_is(const json_t *v, const char *t)
{
    if (strcmp(t, "object") == 0)
        return json_is_object(v);
    if (strcmp(t, "array") == 0)
        return json_is_array(v);
    if (strcmp(t, "string") == 0)
        return json_is_string(v);
    if (strcmp(t, "integer") == 0)
        return json_is_integer(v);
    if (strcmp(t, "number") == 0)
        return json_is_number(v);
    if (strcmp(t, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(t, "null") == 0)
        return json_is_null(v);
    return false;
}

/* Whether v is valid under schema s; reports errors only when report is set
 * (an "if" is a question, not a requirement). */
static bool valid(const json_t *v, const json_t *s, const char *where, bool report);

static bool check_keyword(const json_t *v, const char *k, const json_t *a, const json_t *s,
                          const char *where, bool report)
{
    char sub[256];
    if (strcmp(k, "$comment") == 0 || strcmp(k, "$defs") == 0 || strcmp(k, "then") == 0 ||
        strcmp(k, "else") == 0)
        return true;
    if (strcmp(k, "$ref") == 0) {
        const char *ref = json_string_value(a);
        if (!ref || strncmp(ref, "#/$defs/", 8) != 0) {
            fprintf(stderr, "tracecheck: unsupported $ref %s\n", ref ? ref : "?");
            exit(2);
        }
        json_t *target = json_object_get(json_object_get(root_schema, "$defs"), ref + 8);
        if (!target) {
            fprintf(stderr, "tracecheck: $ref to a missing definition %s\n", ref);
            exit(2);
        }
        return valid(v, target, where, report);
    }
    if (strcmp(k, "type") == 0) {
        if (type_is(v, json_string_value(a)))
            return true;
        if (report)
            err(where, "is not of type", json_string_value(a));
        return false;
    }
    if (strcmp(k, "enum") == 0 || strcmp(k, "const") == 0) {
        bool found = false;
        if (json_is_array(a)) {
            size_t i;
            json_t *x;
            json_array_foreach(a, i, x) found |= json_equal(v, x);
        } else {
            found = json_equal(v, a);
        }
        if (!found && report)
            err(where, "has a value not allowed here",
                json_is_string(v) ? json_string_value(v) : NULL);
        return found;
    }
    if (strcmp(k, "minimum") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) >= json_integer_value(a))
            return true;
        if (report)
            err(where, "is below its minimum", NULL);
        return false;
    }
    if (strcmp(k, "minLength") == 0) {
        if (!json_is_string(v) || (json_int_t)json_string_length(v) >= json_integer_value(a))
            return true;
        if (report)
            err(where, "is too short", NULL);
        return false;
    }
    if (strcmp(k, "minItems") == 0 || strcmp(k, "maxItems") == 0) {
        if (!json_is_array(v))
            return true;
        json_int_t n = (json_int_t)json_array_size(v);
        bool ok = k[1] == 'i' ? n >= json_integer_value(a) : n <= json_integer_value(a);
        if (!ok && report)
            err(where, "has the wrong number of items", NULL);
        return ok;
    }
    if (strcmp(k, "items") == 0) {
        if (!json_is_array(v))
            return true;
        bool ok = true;
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            snprintf(sub, sizeof(sub), "%s[%zu]", where, i);
            ok &= valid(x, a, sub, report);
        }
        return ok;
    }
    if (strcmp(k, "required") == 0) {
        if (!json_is_object(v))
            return true;
        bool ok = true;
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x)
        {
            if (!json_object_get(v, json_string_value(x))) {
                ok = false;
                if (report)
                    err(where, "lacks the required member", json_string_value(x));
            }
        }
        return ok;
    }
    if (strcmp(k, "properties") == 0) {
        if (!json_is_object(v))
            return true;
        bool ok = true;
        const char *name;
        json_t *x;
        json_object_foreach((json_t *)v, name, x)
        {
            json_t *ps = json_object_get(a, name);
            if (ps) {
                snprintf(sub, sizeof(sub), "%s.%s", where, name);
                ok &= valid(x, ps, sub, report);
            }
        }
        return ok;
    }
    if (strcmp(k, "additionalProperties") == 0) {
        if (!json_is_object(v))
            return true;
        json_t *props = json_object_get(s, "properties");
        bool ok = true;
        const char *name;
        json_t *x;
        json_object_foreach((json_t *)v, name, x)
        {
            if (props && json_object_get(props, name))
                continue;
            snprintf(sub, sizeof(sub), "%s.%s", where, name);
            if (json_is_false(a)) {
                ok = false;
                if (report)
                    err(sub, "is not a member the schema knows", NULL);
            } else if (json_is_object(a)) {
                ok &= valid(x, a, sub, report);
            }
        }
        return ok;
    }
    if (strcmp(k, "allOf") == 0) {
        bool ok = true;
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) ok &= valid(v, x, where, report);
        return ok;
    }
    if (strcmp(k, "if") == 0) {
        json_t *branch = json_object_get(s, valid(v, a, where, false) ? "then" : "else");
        return branch ? valid(v, branch, where, report) : true;
    }
    fprintf(stderr,
            "tracecheck: the schema uses the keyword %s, which this checker does not know\n", k);
    exit(2);
}

static bool valid(const json_t *v, const json_t *s, const char *where, bool report)
{
    bool ok = true;
    const char *k;
    json_t *a;
    json_object_foreach((json_t *)s, k, a) ok &= check_keyword(v, k, a, s, where, report);
    return ok;
}

/* The rules listed in the vocabulary page: every `...` span that starts
 * with a citation. */
static char *rules_text;

static bool rule_listed(const char *rule)
{
    char *want = malloc(strlen(rule) + 3);
    sprintf(want, "`%s`", rule);
    bool found = strstr(rules_text, want) != NULL;
    free(want);
    return found;
}

/* Sends seen, for --pairs: (group, from, id) -> (to, type, term). */
struct sent {
    long long group, from, id, to, term;
    char type[32];
};
static struct sent *sends;
static size_t n_sends, cap_sends;

static struct sent *find_send(long long group, long long from, long long id)
{
    for (size_t i = n_sends; i-- > 0;)
        if (sends[i].id == id && sends[i].from == from && sends[i].group == group)
            return &sends[i];
    return NULL;
}

static long long iget(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* Receipts checked at the end (--pairs-unordered). */
struct later {
    json_t *rec;
    char where[128];
};
static struct later *laters;
static size_t n_laters, cap_laters;

static void check_pairs(const json_t *rec, const char *kind);

static void check_later(void)
{
    for (size_t i = 0; i < n_laters; i++) {
        const char *colon = strrchr(laters[i].where, ':');
        path = laters[i].where;
        lineno = colon ? strtoul(colon + 1, NULL, 10) : 0;
        if (colon)
            laters[i].where[colon - laters[i].where] = '\0';
        check_pairs(laters[i].rec, json_string_value(json_object_get(laters[i].rec, "kind")));
        json_decref(laters[i].rec);
    }
}

static void check_pairs(const json_t *rec, const char *kind)
{
    long long group = iget(rec, "group"), from = iget(rec, "from"), id = iget(rec, "id");
    const char *type = json_string_value(json_object_get(rec, "type"));
    if (strcmp(kind, "send") == 0) {
        if (n_sends == cap_sends) {
            cap_sends = cap_sends ? cap_sends * 2 : 1024;
            sends = realloc(sends, cap_sends * sizeof(*sends));
            if (!sends)
                abort();
        }
        struct sent *s = &sends[n_sends++];
        s->group = group, s->from = from, s->id = id;
        s->to = iget(rec, "to"), s->term = iget(rec, "term");
        snprintf(s->type, sizeof(s->type), "%s", type ? type : "");
        return;
    }
    if (id == 0)
        return; /* its sender did not trace */
    const struct sent *s = find_send(group, from, id);
    if (!s)
        err("", kind, "has no earlier send with its id");
    else if (s->to != iget(rec, "to") || s->term != iget(rec, "term") ||
             strcmp(s->type, type ? type : "") != 0)
        err("", kind, "differs from the send with its id");
}

int main(int argc, char **argv)
{
    const char *schema_path = "docs/trace.schema.json", *rules_path = NULL, *expect = NULL;
    bool pairs = false, unordered = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--schema") == 0 && i + 1 < argc)
            schema_path = argv[++i];
        else if (strcmp(argv[i], "--rules") == 0 && i + 1 < argc)
            rules_path = argv[++i];
        else if (strcmp(argv[i], "--expect-kinds") == 0 && i + 1 < argc)
            expect = argv[++i];
        else if (strcmp(argv[i], "--pairs") == 0)
            pairs = true;
        else if (strcmp(argv[i], "--pairs-unordered") == 0)
            pairs = unordered = true;
        else {
            fprintf(stderr, "usage: tracecheck [--schema FILE] [--rules FILE] [--pairs] "
                            "[--pairs-unordered] "
                            "[--expect-kinds LIST] [FILE...]\n");
            return 2;
        }
    }
    json_error_t je;
    root_schema = json_load_file(schema_path, 0, &je);
    if (!root_schema) {
        fprintf(stderr, "tracecheck: %s:%d: %s\n", schema_path, je.line, je.text);
        return 2;
    }
    if (rules_path) {
        FILE *f = fopen(rules_path, "rb");
        size_t cap = 0, len = 0;
        if (!f || getdelim(&rules_text, &cap, '\0', f) < 0) {
            fprintf(stderr, "tracecheck: cannot read %s\n", rules_path);
            return 2;
        }
        len = strlen(rules_text);
        (void)len;
        fclose(f);
    }
    json_t *seen = json_object();
    unsigned long records = 0;
    for (int k = i; k < argc || (k == i && i == argc); k++) {
        path = k < argc ? argv[k] : "-";
        FILE *f = k < argc && strcmp(argv[k], "-") != 0 ? fopen(argv[k], "rb") : stdin;
        if (!f) {
            fprintf(stderr, "tracecheck: cannot open %s\n", argv[k]);
            return 2;
        }
        char *line = NULL;
        size_t cap = 0;
        lineno = 0;
        while (getline(&line, &cap, f) >= 0) {
            lineno++;
            if (line[0] == '\n' || line[0] == '\0')
                continue;
            records++;
            json_t *rec = json_loads(line, 0, &je);
            if (!rec) {
                err("", "is not JSON:", je.text);
                continue;
            }
            if (!valid(rec, root_schema, "", true)) {
                json_decref(rec);
                continue;
            }
            const char *kind = json_string_value(json_object_get(rec, "kind"));
            json_object_set_new(seen, kind, json_true());
            if (strcmp(kind, "rule") == 0) {
                const char *rule = json_string_value(json_object_get(rec, "rule"));
                const char *cite = json_string_value(json_object_get(rec, "cite"));
                const char *text = json_string_value(json_object_get(rec, "text"));
                size_t cl = strlen(cite);
                if (cl ? strncmp(rule, cite, cl) != 0 || rule[cl] != ' ' ||
                             strcmp(rule + cl + 1, text) != 0
                       : strcmp(rule, text) != 0)
                    err(".rule", "is not its cite and text together:", rule);
                if (rules_text && !rule_listed(rule))
                    err(".rule", "is not listed in the vocabulary:", rule);
            }
            if (pairs && unordered && strcmp(kind, "send") != 0 &&
                (strcmp(kind, "recv") == 0 || strcmp(kind, "drop") == 0)) {
                if (n_laters == cap_laters) {
                    cap_laters = cap_laters ? cap_laters * 2 : 1024;
                    laters = realloc(laters, cap_laters * sizeof(*laters));
                    if (!laters)
                        abort();
                }
                laters[n_laters].rec = json_incref(rec);
                snprintf(laters[n_laters].where, sizeof(laters[0].where), "%s:%lu", path, lineno);
                n_laters++;
            } else if (pairs && (strcmp(kind, "send") == 0 || strcmp(kind, "recv") == 0 ||
                                 strcmp(kind, "drop") == 0)) {
                check_pairs(rec, kind);
            }
            json_decref(rec);
        }
        free(line);
        if (f != stdin)
            fclose(f);
    }
    check_later();
    if (expect) {
        char *list = strdup(expect), *save = NULL;
        for (char *kd = strtok_r(list, ",", &save); kd; kd = strtok_r(NULL, ",", &save))
            if (!json_object_get(seen, kd)) {
                path = "(all)";
                lineno = 0;
                err("", "no record of the expected kind", kd);
            }
        free(list);
    }
    if (records == 0) {
        path = "(all)";
        err("", "no records", NULL);
    }
    json_decref(seen);
    json_decref(root_schema);
    free(rules_text);
    free(sends);
    free(laters);
    if (errors) {
        fprintf(stderr, "tracecheck: %u error(s) in %lu records\n", errors, records);
        return 1;
    }
    printf("tracecheck: %lu records valid\n", records);
    return 0;
}
