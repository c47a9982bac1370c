/* heap.c — every allocation of the core goes through here, so a host can
 * count, limit or replace them (the benchmark counts allocations per
 * committed entry; a test can fail them). */
#include "core.h"

#include <stdlib.h>
#include <string.h>

static void *default_malloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void *default_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    return realloc(ptr, size);
}

static void default_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

static const struct raft_heap default_heap = {NULL, default_malloc, default_realloc, default_free};
static const struct raft_heap *heap = &default_heap;

void raft_heap_set(const struct raft_heap *h)
{
    heap = h ? h : &default_heap;
}

void *raft_malloc(size_t size)
{
    return heap->malloc(heap->data, size ? size : 1);
}

void *raft_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = raft_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *raft_realloc(void *ptr, size_t size)
{
    return heap->realloc(heap->data, ptr, size ? size : 1);
}

void raft_free(void *ptr)
{
    if (ptr)
        heap->free(heap->data, ptr);
}
