# stub.awk — cut the regions of one lab out of a C file (labs/make-lab.sh).
#
#   awk -v lab=N -f labs/stub.awk FILE > OUT
#
# A region of the real source is marked with comment lines only:
#
#     /* LAB N BEGIN: what to implement, which section of the paper ...
#      * STUB: code that compiles in its place and returns a neutral value */
#     ...the reference code...
#     /* LAB N END */
#
# For lab N, the region is replaced by a TODO(lab N) comment holding the
# description and then the stub code; regions of other labs are copied as
# they are. Regions do not nest. Exit status 1 on a malformed marker; the
# number of regions cut is printed to stderr as "regions: K".
function trim(s) {
    sub(/^[ \t]+/, "", s)
    sub(/[ \t]+$/, "", s)
    return s
}
function die(msg) {
    printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
    failed = 1
    exit 1
}
# The text of one comment line: without the indent, "/*", "*" and "*/".
function comment_text(s) {
    sub(/^[ \t]*\/\*/, "", s)
    sub(/^[ \t]*\*\//, "", s)
    sub(/^[ \t]*\*/, "", s)
    sub(/\*\/[ \t]*$/, "", s)
    return trim(s)
}
function emit_region(    i, t, desc_n, stub, p, first) {
    desc_n = 0
    stub = ""
    in_stub = 0
    for (i = 1; i <= n_head; i++) {
        t = comment_text(head[i])
        if (i == 1)
            sub(/^LAB [0-9]+ BEGIN:[ \t]*/, "", t)
        if (in_stub) {
            stub = stub (stub == "" ? "" : " ") t
            continue
        }
        p = index(t, "STUB:")
        if (p) {
            in_stub = 1
            stub = trim(substr(t, p + 5))
            t = trim(substr(t, 1, p - 1))
        }
        if (t != "")
            desc[++desc_n] = t
    }
    first = "TODO(lab " lab "):"
    if (desc_n == 0) {
        print indent "/* " first " */"
    } else {
        print indent "/* " first " " desc[1]
        for (i = 2; i <= desc_n; i++)
            print indent " * " desc[i]
        print indent " */"
    }
    if (stub != "")
        print indent stub
    regions++
}
BEGIN {
    state = 0 # 0: outside; 1: in the BEGIN comment; 2: in the region
    regions = 0
    failed = 0
}
{
    line = $0
    if (state == 0) {
        if (line ~ /^[ \t]*\/\* LAB [0-9]+ BEGIN:/) {
            t = line
            sub(/^[ \t]*\/\* LAB /, "", t)
            region_lab = t + 0
            indent = line
            sub(/\/\*.*$/, "", indent)
            n_head = 1
            head[1] = line
            n_body = 0
            begin_nr = FNR
            state = index(line, "*/") ? 2 : 1
            next
        }
        if (line ~ /LAB [0-9]+ (BEGIN|END)/)
            die("a LAB marker outside a region's BEGIN comment: " trim(line))
        print line
        next
    }
    if (state == 1) {
        head[++n_head] = line
        if (index(line, "*/"))
            state = 2
        next
    }
    # state 2: the region's code, up to its END line
    if (line ~ /^[ \t]*\/\* LAB [0-9]+ END \*\/[ \t]*$/) {
        t = line
        sub(/^[ \t]*\/\* LAB /, "", t)
        if (t + 0 != region_lab)
            die("LAB " (t + 0) " END closes the region of LAB " region_lab " (line " begin_nr ")")
        if (region_lab == lab) {
            emit_region()
        } else {
            for (i = 1; i <= n_head; i++)
                print head[i]
            for (i = 1; i <= n_body; i++)
                print body[i]
            print line
        }
        state = 0
        next
    }
    if (line ~ /LAB [0-9]+ (BEGIN|END)/)
        die("regions do not nest (the region of LAB " region_lab " began at line " begin_nr ")")
    body[++n_body] = line
}
END {
    if (failed)
        exit 1
    if (state != 0) {
        printf "%s: the region of LAB %d that begins at line %d has no END\n", FILENAME, region_lab,
            begin_nr > "/dev/stderr"
        exit 1
    }
    printf "regions: %d\n", regions > "/dev/stderr"
}
