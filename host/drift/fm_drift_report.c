/* fm_drift_report.c: text, JSON and HTML renderings of a drift run. */
#include "fm_drift_report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_model.h"
#include "fm_png.h"

static const char *fmt_num(char *buf, size_t cap, double v) {
    if (isnan(v))
        snprintf(buf, cap, "-");
    else if (isinf(v))
        snprintf(buf, cap, v > 0 ? "inf" : "-inf");
    else if (v != 0 && (fabs(v) < 1e-3 || fabs(v) >= 1e5))
        snprintf(buf, cap, "%.3e", v);
    else
        snprintf(buf, cap, "%.4f", v);
    return buf;
}

static void group_counts(const fm_drift_run_t *r, const char *group, int *drifted, int *total) {
    *drifted = *total = 0;
    for (int i = 0; i < r->nfeatures; i++)
        if (strcmp(r->f[i].group, group) == 0) {
            (*total)++;
            *drifted += r->f[i].drifted;
        }
}

void fm_drift_report_text(FILE *f, const fm_drift_run_t *r, int top) {
    fprintf(f, "drift check #%lld: %s\n", (long long)r->id, r->dataset_drift ? "DATASET DRIFT" : "no dataset drift");
    fprintf(f, "  share of drifted features %.4f (%d of %d) %s %.2f\n", r->share, r->drifted, r->features,
            r->dataset_drift ? ">=" : "<", r->drift_share);
    fprintf(f, "  reference #%lld: %lld images of %s%s%s\n", (long long)r->reference_id, (long long)r->ref_images,
            r->ref_source, r->ref_model[0] ? ", model " : "", r->ref_model);
    fprintf(f, "  window %s .. %s, version %s: %lld sampled images, %lld predictions\n", r->window_start,
            r->window_end, r->model_version[0] ? r->model_version : "(all)", (long long)r->images,
            (long long)r->predictions);
    int dp, tp, ds, ts, dq, tq;
    group_counts(r, "pixel", &dp, &tp);
    group_counts(r, "summary", &ds, &ts);
    group_counts(r, "prediction", &dq, &tq);
    fprintf(f, "  drifted by group: pixels %d/%d, summary features %d/%d, predictions %d/%d\n", dp, tp, ds, ts, dq,
            tq);
    if (top <= 0 || r->nfeatures == 0)
        return;
    int n = top < r->nfeatures ? top : r->nfeatures;
    fprintf(f, "\n  top %d features by drift (score against threshold):\n", n);
    fprintf(f, "  %-16s %-14s %12s %10s %12s  %s\n", "feature", "test", "score", "threshold", "statistic", "drifted");
    for (int i = 0; i < n; i++) {
        const fm_drift_feature_t *x = &r->f[i];
        char s[32], t[32], st[32];
        fprintf(f, "  %-16s %-14s %12s %10s %12s  %s\n", x->name, x->stattest, fmt_num(s, sizeof s, x->score),
                fmt_num(t, sizeof t, x->threshold), fmt_num(st, sizeof st, x->statistic), x->drifted ? "yes" : "no");
    }
}

/* cJSON prints non-finite numbers as null, which is what JSON can say. */
int fm_drift_report_json(FILE *f, const fm_drift_run_t *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return fm_fail(FM_ENOMEM, "json: out of memory");
    cJSON_AddNumberToObject(o, "run_id", (double)r->id);
    cJSON_AddBoolToObject(o, "dataset_drift", r->dataset_drift);
    cJSON_AddNumberToObject(o, "share", r->share);
    cJSON_AddNumberToObject(o, "drift_share", r->drift_share);
    cJSON_AddNumberToObject(o, "features", r->features);
    cJSON_AddNumberToObject(o, "drifted", r->drifted);
    cJSON_AddNumberToObject(o, "reference_id", (double)r->reference_id);
    if (r->model_version[0])
        cJSON_AddStringToObject(o, "model_version", r->model_version);
    else
        cJSON_AddNullToObject(o, "model_version");
    cJSON_AddStringToObject(o, "window_start", r->window_start);
    cJSON_AddStringToObject(o, "window_end", r->window_end);
    cJSON_AddStringToObject(o, "requested_start", r->requested_start);
    cJSON_AddStringToObject(o, "requested_end", r->requested_end);
    cJSON_AddNumberToObject(o, "images", (double)r->images);
    cJSON_AddNumberToObject(o, "predictions", (double)r->predictions);
    cJSON *classes = cJSON_AddArrayToObject(o, "classes");
    for (int k = 0; k < FM_NUM_CLASSES; k++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "class", k);
        cJSON_AddStringToObject(c, "name", fm_class_names[k]);
        cJSON_AddNumberToObject(c, "reference", (double)r->ref_class[k]);
        cJSON_AddNumberToObject(c, "current", (double)r->cur_class[k]);
        cJSON_AddItemToArray(classes, c);
    }
    cJSON *feats = cJSON_AddArrayToObject(o, "results");
    for (int i = 0; i < r->nfeatures; i++) {
        const fm_drift_feature_t *x = &r->f[i];
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "feature", x->name);
        cJSON_AddStringToObject(c, "group", x->group);
        cJSON_AddStringToObject(c, "column_type", x->column_type);
        cJSON_AddStringToObject(c, "stattest", x->stattest);
        cJSON_AddNumberToObject(c, "score", x->score);
        cJSON_AddNumberToObject(c, "threshold", x->threshold);
        cJSON_AddBoolToObject(c, "drifted", x->drifted);
        if (isnan(x->p_value))
            cJSON_AddNullToObject(c, "p_value");
        else
            cJSON_AddNumberToObject(c, "p_value", x->p_value);
        cJSON_AddNumberToObject(c, "statistic", x->statistic);
        cJSON_AddNumberToObject(c, "n_ref", (double)x->n_ref);
        cJSON_AddNumberToObject(c, "n_cur", (double)x->n_cur);
        cJSON_AddNumberToObject(c, "n_values", x->n_values);
        cJSON_AddItemToArray(feats, c);
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text)
        return fm_fail(FM_ENOMEM, "json: out of memory");
    fprintf(f, "%s\n", text);
    free(text);
    return 0;
}

/* A dark-to-bright map (black, purple, red, orange, pale yellow): t in [0,1]. */
static void colormap(double t, uint8_t *rgb) {
    static const double stops[5][3] = {{0, 0, 4}, {87, 16, 110}, {188, 55, 84}, {249, 142, 9}, {252, 255, 164}};
    if (!(t > 0))
        t = 0;
    if (t > 1)
        t = 1;
    double x = t * 4;
    int i = (int)x;
    if (i > 3)
        i = 3;
    double u = x - i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lround(stops[i][c] + u * (stops[i + 1][c] - stops[i][c]));
}

uint8_t *fm_drift_heatmap_rgb(const fm_drift_run_t *r, int scale) {
    int side = 28 * scale;
    uint8_t *img = malloc((size_t)side * side * 3);
    if (!img)
        return NULL;
    for (int p = 0; p < 784; p++) {
        const fm_drift_feature_t *x = fm_drift_run_pixel(r, p);
        uint8_t c[3];
        /* Strength 1 is the threshold: the middle of the scale. */
        colormap(x ? x->strength / 2 : 0, c);
        int y0 = (p / 28) * scale, x0 = (p % 28) * scale;
        for (int y = 0; y < scale; y++)
            for (int xx = 0; xx < scale; xx++)
                memcpy(img + ((size_t)(y0 + y) * side + x0 + xx) * 3, c, 3);
    }
    return img;
}

static uint8_t *gray_rgb(const double *mean, int scale) {
    int side = 28 * scale;
    uint8_t *img = malloc((size_t)side * side * 3);
    if (!img)
        return NULL;
    for (int p = 0; p < 784; p++) {
        double v = mean[p];
        uint8_t g = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lround(v));
        int y0 = (p / 28) * scale, x0 = (p % 28) * scale;
        for (int y = 0; y < scale; y++)
            for (int xx = 0; xx < scale; xx++)
                memset(img + ((size_t)(y0 + y) * side + x0 + xx) * 3, g, 3);
    }
    return img;
}

/* A data: URI of the PNG of an RGB image (malloc'd). */
static char *png_data_uri(uint8_t *rgb, int side) {
    if (!rgb) {
        fm_fail(FM_ENOMEM, "html: out of memory");
        return NULL;
    }
    uint8_t *png;
    size_t len;
    int rc = fm_png_encode_rgb(rgb, side, side, &png, &len);
    free(rgb);
    if (rc)
        return NULL;
    char *b64 = fm_base64(png, len);
    free(png);
    if (!b64)
        return NULL;
    char *uri = malloc(strlen(b64) + 32);
    if (uri)
        sprintf(uri, "data:image/png;base64,%s", b64);
    else
        fm_fail(FM_ENOMEM, "html: out of memory");
    free(b64);
    return uri;
}

static void html_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

static void feature_row(FILE *f, const fm_drift_feature_t *x) {
    char s[32], t[32], p[32], st[32];
    fprintf(f, "<tr class=\"%s\"><td>", x->drifted ? "drift" : "");
    html_text(f, x->name);
    fprintf(f, "</td><td>%s</td><td>%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td>"
               "<td class=\"n\">%s</td><td class=\"n\">%lld / %lld</td><td>%s</td></tr>\n",
            x->group, x->stattest, fmt_num(s, sizeof s, x->score), fmt_num(t, sizeof t, x->threshold),
            fmt_num(p, sizeof p, x->p_value), fmt_num(st, sizeof st, x->statistic), (long long)x->n_ref,
            (long long)x->n_cur, x->drifted ? "yes" : "no");
}

static int write_html(FILE *f, const fm_drift_run_t *r, int top) {
    enum { SCALE = 10 };
    char *heat = png_data_uri(fm_drift_heatmap_rgb(r, SCALE), 28 * SCALE);
    char *refm = heat ? png_data_uri(gray_rgb(r->ref_mean, SCALE / 2), 28 * (SCALE / 2)) : NULL;
    char *curm = refm ? png_data_uri(gray_rgb(r->cur_mean, SCALE / 2), 28 * (SCALE / 2)) : NULL;
    if (!heat || !refm || !curm) {
        free(heat);
        free(refm);
        free(curm);
        return FM_ENOMEM;
    }
    int dp, tp, ds, ts, dq, tq;
    group_counts(r, "pixel", &dp, &tp);
    group_counts(r, "summary", &ds, &ts);
    group_counts(r, "prediction", &dq, &tq);
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
               "<title>fmserve drift check #%lld</title>\n<style>\n"
               "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}\n"
               "h1 .v{padding:.1em .5em;border-radius:.3em;color:#fff}\n"
               ".drifted{background:#b3261e}.ok{background:#2e7d32}\n"
               "table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;"
               "text-align:left}\n.n{text-align:right;font-variant-numeric:tabular-nums}\ntr.drift td{background:#fdecea}\n"
               "figure{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top}img{image-rendering:pixelated;"
               "border:1px solid #999}\n.legend{width:280px;height:12px;background:linear-gradient(to right,"
               "rgb(0,0,4),rgb(87,16,110),rgb(188,55,84),rgb(249,142,9),rgb(252,255,164))}\n"
               ".scale{display:flex;justify-content:space-between;width:280px;font-size:.8em}\n"
               ".bar{display:inline-block;height:.8em;vertical-align:middle}.r{background:#6c8ebf}.c{background:#e07b39}\n"
               "</style></head><body>\n",
            (long long)r->id);
    fprintf(f, "<h1>Drift check #%lld <span class=\"v %s\">%s</span></h1>\n", (long long)r->id,
            r->dataset_drift ? "drifted" : "ok", r->dataset_drift ? "DATASET DRIFT" : "no dataset drift");
    fprintf(f, "<p>%d of %d features drifted: share %.4f %s %.2f (Evidently's DataDriftPreset rule).</p>\n",
            r->drifted, r->features, r->share, r->dataset_drift ? "&ge;" : "&lt;", r->drift_share);
    fprintf(f, "<table>\n<tr><th>window</th><td>%s &ndash; %s (requested %s &ndash; %s)</td></tr>\n", r->window_start,
            r->window_end, r->requested_start, r->requested_end);
    fprintf(f, "<tr><th>model version</th><td>");
    html_text(f, r->model_version[0] ? r->model_version : "all");
    fprintf(f, "</td></tr>\n<tr><th>current data</th><td>%lld sampled images, %lld predictions</td></tr>\n",
            (long long)r->images, (long long)r->predictions);
    fprintf(f, "<tr><th>reference</th><td>#%lld: %lld images of ", (long long)r->reference_id,
            (long long)r->ref_images);
    html_text(f, r->ref_source);
    if (r->ref_model[0]) {
        fprintf(f, ", model ");
        html_text(f, r->ref_model);
    }
    if (r->ref_description[0]) {
        fprintf(f, " (");
        html_text(f, r->ref_description);
        fprintf(f, ")");
    }
    fprintf(f, "</td></tr>\n<tr><th>drifted</th><td>pixels %d/%d, summary features %d/%d, predictions %d/%d</td>"
               "</tr>\n<tr><th>checked</th><td>%s</td></tr>\n</table>\n",
            dp, tp, ds, ts, dq, tq, r->started_at);
    fprintf(f, "<h2>Per-pixel drift</h2>\n<figure><img alt=\"per-pixel drift heat map\" width=\"%d\" height=\"%d\" "
               "src=\"%s\"><figcaption>score relative to the threshold<div class=\"legend\"></div><div class=\"scale\">"
               "<span>0</span><span>threshold</span><span>&ge;2&times;</span></div></figcaption></figure>\n",
            28 * SCALE, 28 * SCALE, heat);
    fprintf(f, "<figure><img alt=\"reference mean image\" width=\"%d\" height=\"%d\" src=\"%s\">"
               "<figcaption>reference mean</figcaption></figure>\n",
            28 * SCALE, 28 * SCALE, refm);
    fprintf(f, "<figure><img alt=\"current mean image\" width=\"%d\" height=\"%d\" src=\"%s\">"
               "<figcaption>current mean</figcaption></figure>\n",
            28 * SCALE, 28 * SCALE, curm);
    int64_t rt = 0, ct = 0;
    for (int k = 0; k < FM_NUM_CLASSES; k++) {
        rt += r->ref_class[k];
        ct += r->cur_class[k];
    }
    fprintf(f, "<h2>Predicted classes</h2>\n<table><tr><th>class</th><th class=\"n\">reference</th>"
               "<th class=\"n\">current</th><th></th></tr>\n");
    for (int k = 0; k < FM_NUM_CLASSES; k++) {
        double rp = rt ? 100.0 * (double)r->ref_class[k] / (double)rt : 0;
        double cp = ct ? 100.0 * (double)r->cur_class[k] / (double)ct : 0;
        fprintf(f, "<tr><td>%d ", k);
        html_text(f, fm_class_names[k]);
        fprintf(f, "</td><td class=\"n\">%.1f%%</td><td class=\"n\">%.1f%%</td><td><span class=\"bar r\" "
                   "style=\"width:%.0fpx\"></span><br><span class=\"bar c\" style=\"width:%.0fpx\"></span></td></tr>\n",
                rp, cp, rp * 4, cp * 4);
    }
    fprintf(f, "</table><p><span class=\"bar r\" style=\"width:1em\"></span> reference &nbsp; "
               "<span class=\"bar c\" style=\"width:1em\"></span> current</p>\n");
    const char *head = "<table><tr><th>feature</th><th>group</th><th>test</th><th class=\"n\">score</th>"
                       "<th class=\"n\">threshold</th><th class=\"n\">p-value</th><th class=\"n\">statistic</th>"
                       "<th class=\"n\">rows ref / cur</th><th>drifted</th></tr>\n";
    fprintf(f, "<h2>Summary and prediction features</h2>\n%s", head);
    for (int i = 0; i < r->nfeatures; i++)
        if (strcmp(r->f[i].group, "pixel") != 0)
            feature_row(f, &r->f[i]);
    int n = top < r->nfeatures ? top : r->nfeatures;
    fprintf(f, "</table>\n<h2>Top %d features by drift</h2>\n%s", n, head);
    for (int i = 0; i < n; i++)
        feature_row(f, &r->f[i]);
    fprintf(f, "</table>\n<p>Tests and thresholds follow Evidently's DataDriftPreset defaults; see docs/drift.md."
               "</p>\n</body></html>\n");
    free(heat);
    free(refm);
    free(curm);
    return 0;
}

int fm_drift_report_html(const char *path, const fm_drift_run_t *r, int top) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return fm_fail(FM_EIO, "%s: %s", tmp, strerror(errno));
    int rc = write_html(f, r, top);
    if (fclose(f) != 0 && rc == 0)
        rc = fm_fail(FM_EIO, "%s: write failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = fm_fail(FM_EIO, "rename %s to %s: %s", tmp, path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}
