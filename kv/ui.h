/* ui.h — the dashboard's files (ui/), built into the binaries that serve or
 * write them: kvd serves them at /ui/, raftsim run --html inlines them into
 * one page. scripts/embed-ui.sh generates their table at build time, so a
 * kvd needs no files and no network at run time. */
#ifndef KV_UI_H
#define KV_UI_H

#include <stddef.h>

struct ui_file {
    const char *name; /* "index.html", "app.js", ... */
    const char *type; /* its Content-Type */
    const unsigned char *data;
    size_t len;
};

extern const struct ui_file ui_files[];
extern const size_t ui_n_files;

/* The file of that name, or NULL. */
const struct ui_file *ui_file_find(const char *name);

#endif /* KV_UI_H */
