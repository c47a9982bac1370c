/* iolog.h — one line to stderr, prefixed with the wall-clock time (HH:MM:SS.mmm), so
 * the logs of several nodes can be merged and read as one story. */
#ifndef RAFT_IO_IOLOG_H
#define RAFT_IO_IOLOG_H

void iolog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* RAFT_IO_IOLOG_H */
