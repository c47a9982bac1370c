/* strings.c — the text of error codes, roles, message types and traces. */
#include "core.h"

#include <stdio.h>

const char *raft_strerror(int err)
{
    switch (err) {
    case RAFT_OK:
        return "ok";
    case RAFT_ENOTLEADER:
        return "not the leader";
    case RAFT_EBUSY:
        return "too many requests in flight; retry later";
    case RAFT_EINVAL:
        return "invalid argument";
    case RAFT_ENOMEM:
        return "out of memory";
    case RAFT_ETOOBIG:
        return "entry too large";
    case RAFT_ECORRUPT:
        return "inconsistent state";
    case RAFT_EUNSAFE:
        return "unsafe option set without allow_unsafe";
    case RAFT_ETRANSFER:
        return "leadership transfer in progress";
    case RAFT_ECONFCHANGE:
        return "a configuration change is pending; retry shortly";
    case RAFT_ECATCHUP:
        return "the learner has not caught up yet; retry shortly";
    default:
        return "unknown error";
    }
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "?";
}

const char *raft_message_type_name(enum raft_message_type type)
{
    switch (type) {
    case RAFT_MSG_REQUEST_VOTE:
        return "RequestVote";
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        return "RequestVoteResult";
    case RAFT_MSG_APPEND_ENTRIES:
        return "AppendEntries";
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        return "AppendEntriesResult";
    case RAFT_MSG_TIMEOUT_NOW:
        return "TimeoutNow";
    case RAFT_MSG_INSTALL_SNAPSHOT:
        return "InstallSnapshot";
    case RAFT_MSG_INSTALL_SNAPSHOT_RESULT:
        return "InstallSnapshotResult";
    }
    return "?";
}

/* Append " name=1,2,3" ("name=-" for none) at buf + n; returns the new n as
 * snprintf counts it, so a truncated line still reports its full length. */
static int format_ids(char *buf, size_t size, int n, const char *name, const raft_id *ids,
                      size_t n_ids)
{
    if (n < 0)
        return n;
    int w = snprintf((size_t)n < size ? buf + n : NULL, (size_t)n < size ? size - (size_t)n : 0,
                     "%s%s", name, n_ids ? "" : "-");
    if (w < 0)
        return w;
    n += w;
    for (size_t i = 0; i < n_ids; i++) {
        w = snprintf((size_t)n < size ? buf + n : NULL, (size_t)n < size ? size - (size_t)n : 0,
                     "%s%llu", i ? "," : "", (unsigned long long)ids[i]);
        if (w < 0)
            return w;
        n += w;
    }
    return n;
}

int raft_trace_format(const struct raft_trace *t, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s", t->rule);
    if (t->peer && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, " peer=%llu", (unsigned long long)t->peer);
    if (t->index && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, " index=%llu", (unsigned long long)t->index);
    if (t->value_name && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, " %s=%llu", t->value_name,
                      (unsigned long long)t->value);
    if ((t->vote & RAFT_TRACE_CANDIDATE_LOG) && n >= 0 && (size_t)n < size)
        n +=
            snprintf(buf + n, size - (size_t)n, " cand_last=%llu/t%llu",
                     (unsigned long long)t->cand_last_index, (unsigned long long)t->cand_last_term);
    if ((t->vote & RAFT_TRACE_OUR_LOG) && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, " our_last=%llu/t%llu",
                      (unsigned long long)t->our_last_index, (unsigned long long)t->our_last_term);
    if (t->vote & RAFT_TRACE_VOTERS) {
        n = format_ids(buf, size, n, " granted=", t->granted, t->n_granted);
        n = format_ids(buf, size, n, " voters=", t->voters, t->n_voters);
    }
    return n;
}
