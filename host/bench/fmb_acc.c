/* fmb_acc.c: fmbench's accumulators (histograms, counts, errors by code,
 * per-version figures), their merge, and the stability rule. */
#include <stdio.h>
#include <string.h>

#include "fm_error.h"
#include "fmb.h"

int fmb_acc_init(fmb_acc_t *a) {
    memset(a, 0, sizeof *a);
    fm_hdr_t **h[] = {&a->lat, &a->service, &a->queue, &a->compute, &a->overhead, &a->lag};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        int rc = fm_hdr_new(FMB_HDR_BITS, FMB_HDR_MAX_US, h[i]);
        if (rc) {
            fmb_acc_free(a);
            return rc;
        }
    }
    return 0;
}

void fmb_acc_free(fmb_acc_t *a) {
    fm_hdr_free(a->lat);
    fm_hdr_free(a->service);
    fm_hdr_free(a->queue);
    fm_hdr_free(a->compute);
    fm_hdr_free(a->overhead);
    fm_hdr_free(a->lag);
    for (int i = 0; i < a->nver; i++)
        fm_hdr_free(a->ver[i].lat);
    memset(a, 0, sizeof *a);
}

void fmb_errs_add(fmb_errs_t *e, const char *code, uint64_t n) {
    if (n == 0)
        return;
    for (int i = 0; i < e->ncodes; i++)
        if (!strcmp(e->code[i], code)) {
            e->n[i] += n;
            return;
        }
    int i;
    if (e->ncodes < FMB_MAX_CODES) {
        i = e->ncodes++;
    } else {
        /* More distinct codes than the protocol has: the last slot becomes
         * OTHER and takes the rest. */
        i = FMB_MAX_CODES - 1;
        code = "OTHER";
    }
    snprintf(e->code[i], sizeof e->code[i], "%s", code);
    e->n[i] += n;
}

uint64_t fmb_errs_total(const fmb_errs_t *e) {
    uint64_t t = 0;
    for (int i = 0; i < e->ncodes; i++)
        t += e->n[i];
    return t;
}

int fmb_code_retryable(const char *code) {
    static const char *const retryable[] = {"OVERLOADED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "INCOMPLETE"};
    for (size_t i = 0; i < sizeof retryable / sizeof retryable[0]; i++)
        if (!strcmp(code, retryable[i]))
            return 1;
    return 0;
}

fmb_vacc_t *fmb_acc_version(fmb_acc_t *a, const char *version, const char *role) {
    for (int i = 0; i < a->nver; i++)
        if (!strcmp(a->ver[i].version, version))
            return &a->ver[i];
    if (a->nver == FMB_MAX_VERSIONS)
        return &a->ver[FMB_MAX_VERSIONS - 1];
    fmb_vacc_t *v = &a->ver[a->nver];
    memset(v, 0, sizeof *v);
    if (fm_hdr_new(FMB_HDR_VERSION_BITS, FMB_HDR_MAX_US, &v->lat) != 0)
        return NULL;
    a->nver++;
    snprintf(v->version, sizeof v->version, "%s", version);
    snprintf(v->role, sizeof v->role, "%s", role);
    return v;
}

int fmb_acc_add(fmb_acc_t *d, const fmb_acc_t *s) {
    int rc;
    if ((rc = fm_hdr_add(d->lat, s->lat)) || (rc = fm_hdr_add(d->service, s->service)) ||
        (rc = fm_hdr_add(d->queue, s->queue)) || (rc = fm_hdr_add(d->compute, s->compute)) ||
        (rc = fm_hdr_add(d->overhead, s->overhead)) || (rc = fm_hdr_add(d->lag, s->lag)))
        return rc;
    d->sent += s->sent;
    d->ok += s->ok;
    d->images_ok += s->images_ok;
    d->late += s->late;
    d->incomplete += s->incomplete;
    d->labelled += s->labelled;
    d->correct += s->correct;
    d->changed += s->changed;
    for (int i = 0; i < s->errs.ncodes; i++)
        fmb_errs_add(&d->errs, s->errs.code[i], s->errs.n[i]);
    for (int i = 0; i < s->nver; i++) {
        const fmb_vacc_t *sv = &s->ver[i];
        fmb_vacc_t *dv = fmb_acc_version(d, sv->version, sv->role);
        if (!dv)
            return FM_ENOMEM;
        dv->requests += sv->requests;
        dv->images += sv->images;
        dv->labelled += sv->labelled;
        dv->correct += sv->correct;
        if ((rc = fm_hdr_add(dv->lat, sv->lat)))
            return rc;
    }
    return 0;
}

static int series_within(const double *v, int n, double pct) {
    double lo = v[0], hi = v[0], sum = 0;
    for (int i = 0; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        sum += v[i];
    }
    double mean = sum / n;
    return hi - lo <= pct / 100.0 * mean;
}

int fmb_stable(const double *rps, const double *p99, int m, int n, double pct) {
    if (n < 1 || m < n)
        return 0;
    return series_within(rps + (m - n), n, pct) && series_within(p99 + (m - n), n, pct);
}
