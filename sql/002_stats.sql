-- 002_stats.sql: the statistical tests of Evidently's DataDriftPreset for
-- PostgreSQL 15, which has no erf() or lgamma(): the regularized incomplete
-- gamma function (chi-square and normal tails), scipy's K-S distributions,
-- and fm_drift_stats(), which picks and runs each column's default test from
-- value/count histograms. Formulas and sources: docs/drift.md.
--
-- Two PostgreSQL habits shape this code: exp() raises an error below about
-- -745 instead of returning 0, and float8 multiplication and division raise
-- an error when a result underflows to zero. Every place where a value can
-- become that small is guarded.

-- exp() that returns 0 where PostgreSQL would raise an underflow error.
CREATE FUNCTION fm_exp(x float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN x < -745.0 THEN 0.0::float8 ELSE exp(x) END $$;

-- a * 2^e for integer e (C's ldexp), 0 on underflow.
CREATE FUNCTION fm_ldexp(a float8, e integer) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN a = 0 THEN 0.0::float8
               WHEN ln(abs(a)) + e * ln(2.0::float8) < -744.0 THEN 0.0::float8
               ELSE a * power(2.0::float8, e) END $$;

-- ln Γ(k/2) for a positive integer k, exactly as a sum of logarithms:
-- Γ(m) = (m-1)! and Γ(m + 1/2) = √π · Π_{j=1..m} (j - 1/2). Chi-square tails
-- only ever need half-integer arguments.
CREATE FUNCTION fm_lgamma_half(k integer) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    s float8 := 0;
BEGIN
    IF k <= 0 THEN
        RAISE EXCEPTION 'fm_lgamma_half: k must be positive, got %', k;
    END IF;
    IF k % 2 = 0 THEN
        FOR j IN 2 .. k / 2 - 1 LOOP
            s := s + ln(j::float8);
        END LOOP;
    ELSE
        s := 0.5 * ln(pi());
        FOR j IN 1 .. (k - 1) / 2 LOOP
            s := s + ln(j - 0.5::float8);
        END LOOP;
    END IF;
    RETURN s;
END $$;

-- Q(k/2, x): the regularized upper incomplete gamma function at a
-- half-integer, by the series for P when x < a + 1 and Lentz's continued
-- fraction for Q otherwise (Numerical Recipes' gser/gcf). Q(a, 0) = 1 and
-- Q(a, ∞) = 0. Agrees with scipy's gammaincc to about 1e-14.
CREATE FUNCTION fm_gammq_half(k integer, x float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    a   float8 := k / 2.0;
    gln float8;
    ap  float8;
    s   float8;
    del float8;
    b   float8;
    c   float8;
    d   float8;
    h   float8;
    an  float8;
    lp  float8;
    fpmin CONSTANT float8 := 1e-300;
    eps   CONSTANT float8 := 1e-16;
BEGIN
    IF x = 'NaN'::float8 THEN
        RETURN 'NaN'::float8;
    END IF;
    IF x <= 0 THEN
        RETURN 1.0;
    END IF;
    IF x = 'Infinity'::float8 THEN
        RETURN 0.0;
    END IF;
    gln := fm_lgamma_half(k);
    lp := -x + a * ln(x) - gln;
    IF x < a + 1 THEN
        ap := a;
        s := 1.0 / a;
        del := s;
        FOR i IN 1 .. 100000 LOOP
            ap := ap + 1;
            del := del * (x / ap);
            s := s + del;
            EXIT WHEN abs(del) < abs(s) * eps;
        END LOOP;
        RETURN 1.0 - s * fm_exp(lp);
    END IF;
    b := x + 1 - a;
    c := 1 / fpmin;
    d := 1 / b;
    h := d;
    FOR i IN 1 .. 100000 LOOP
        an := -i * (i - a);
        b := b + 2;
        d := an * d + b;
        IF abs(d) < fpmin THEN d := fpmin; END IF;
        c := b + an / c;
        IF abs(c) < fpmin THEN c := fpmin; END IF;
        d := 1 / d;
        del := d * c;
        h := h * del;
        EXIT WHEN abs(del - 1) < eps;
    END LOOP;
    RETURN fm_exp(lp + ln(h));
END $$;

-- Chi-square survival function: scipy.stats.chi2.sf(x, dof) = Q(dof/2, x/2).
CREATE FUNCTION fm_chi2_sf(x float8, dof integer) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN dof <= 0 THEN 'NaN'::float8 ELSE fm_gammq_half(dof, x / 2) END $$;

-- Two-sided normal p-value 2·(1 - Φ(|z|)) = erfc(|z|/√2) = Q(1/2, z²/2).
CREATE FUNCTION fm_norm_2sided_p(z float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN z = 'NaN'::float8 THEN 'NaN'::float8
               WHEN abs(z) = 'Infinity'::float8 THEN 0.0::float8
               ELSE fm_gammq_half(1, z * z / 2) END $$;

------------------------------------------------------------------------------
-- Kolmogorov-Smirnov p-values, as scipy.stats.ks_2samp(method='auto',
-- alternative='two-sided') computes them: exact when both samples have at
-- most 10,000 values, else kstwo.sf(D, round(n1·n2/(n1+n2))).

-- P(D_{n,n} >= h/n) for equal sample sizes: 2·Σ_k (-1)^k ... written as the
-- nested product scipy uses to avoid cancellation (_compute_prob_outside_square).
CREATE FUNCTION fm_ks_prob_outside_square(n bigint, h bigint) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    p  float8 := 0;
    p1 float8;
    k  bigint := floor(n::float8 / h)::bigint;
BEGIN
    WHILE k >= 0 LOOP
        p1 := 1.0;
        FOR j IN 0 .. h - 1 LOOP
            -- The factors fall towards zero; below 1e-300 the term no longer
            -- matters and the next product could underflow (an error here).
            IF p1 < 1e-300 THEN
                p1 := 0;
                EXIT;
            END IF;
            p1 := ((n - k * h - j)::float8 * p1) / (n + k * h + j + 1);
        END LOOP;
        p := p1 * (1.0 - p);
        k := k - 1;
    END LOOP;
    RETURN 2 * p;
END $$;

-- P(D_{m,n} >= h/lcm(m,n)) for unequal sizes: the share of monotone lattice
-- paths from (0,0) to (m,n) that leave the band |x/m - y/n| < h/lcm, by the
-- recursion for 1-p of Viehmann (2021, arXiv:2102.08037) over a sliding
-- column window, as in scipy's _compute_outer_prob_inside_method. Costs
-- O(max(m,n) · window), window ≈ 2·D·min(m,n).
CREATE FUNCTION fm_ks_outer_prob_inside(p_m bigint, p_n bigint, g bigint, h bigint) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    m bigint := greatest(p_m, p_n);
    n bigint := least(p_m, p_n);
    mg bigint;
    ng bigint;
    minj bigint := 0;
    maxj bigint;
    curlen bigint;
    lastminj bigint;
    lastlen bigint;
    lena bigint;
    a float8[];
    val float8;
    j bigint;
BEGIN
    mg := m / g;
    ng := n / g;
    maxj := least(ceil(h::float8 / mg)::bigint, n + 1);
    curlen := maxj - minj;
    lena := least(2 * maxj + 2, n + 1);
    a := array_fill(1.0::float8, ARRAY[lena::integer]);
    FOR idx IN minj .. maxj - 1 LOOP
        a[idx + 1] := 0.0;
    END LOOP;
    FOR i IN 1 .. m LOOP
        lastminj := minj;
        lastlen := curlen;
        minj := greatest(floor((ng * i - h)::float8 / mg)::bigint + 1, 0);
        minj := least(minj, n);
        maxj := least(ceil((ng * i + h)::float8 / mg)::bigint, n + 1);
        IF maxj <= minj THEN
            RETURN 1.0;
        END IF;
        val := CASE WHEN minj = 0 THEN 0.0 ELSE 1.0 END;
        FOR jj IN 0 .. maxj - minj - 1 LOOP
            j := jj + minj;
            val := (a[jj + minj - lastminj + 1] * i + val * j) / (i + j);
            IF val < 1e-300 THEN
                val := 0; -- see fm_ks_prob_outside_square
            END IF;
            a[jj + 1] := val;
        END LOOP;
        curlen := maxj - minj;
        IF lastlen > curlen THEN
            FOR idx IN maxj - minj .. maxj - minj + (lastlen - curlen) - 1 LOOP
                a[idx + 1] := 1;
            END LOOP;
        END IF;
    END LOOP;
    RETURN a[maxj - minj];
END $$;


-- x^k for a non-negative base and integer k >= 0, 0 where PostgreSQL's
-- power() would raise an underflow error.
CREATE FUNCTION fm_powi(x float8, k integer) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN k = 0 THEN 1.0::float8
               WHEN x = 0 THEN 0.0::float8
               WHEN k * ln(abs(x)) < -700.0 THEN 0.0::float8
               ELSE power(x, k) END $$;

-- x·y for products that may underflow: 0 instead of PostgreSQL's error.
CREATE FUNCTION fm_mul(x float8, y float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT CASE WHEN x = 0 OR y = 0 THEN 0.0::float8
               WHEN abs(x) > 1e-150 AND abs(y) > 1e-150 THEN x * y
               WHEN ln(abs(x)) + ln(abs(y)) < -740.0 THEN 0.0::float8
               ELSE sign(x) * sign(y) * exp(ln(abs(x)) + ln(abs(y))) END $$;

-- ln(n! / n^n) by Stirling's series (scipy's _log_nfactorial_div_n_pow_n).
CREATE FUNCTION fm_log_nfact_div_npow(n bigint) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    -- B_{2j}/(2j)/(2j-1) for j = 8..1, highest power first (np.polyval order).
    coeffs CONSTANT float8[] := ARRAY[-2.955065359477124183e-2, 6.4102564102564102564e-3,
        -1.9175269175269175269e-3, 8.4175084175084175084e-4, -5.952380952380952381e-4,
        7.9365079365079365079e-4, -2.7777777777777777778e-3, 8.3333333333333333333e-2];
    rn float8 := 1.0 / n;
    x  float8;
    y  float8 := 0;
    c  float8;
BEGIN
    x := rn / n;
    FOREACH c IN ARRAY coeffs LOOP
        y := y * x + c;
    END LOOP;
    RETURN ln(n::float8) / 2 - n + ln(2 * pi()) / 2 + rn * y;
END $$;

-- One-sided Smirnov tail P(D+_n >= e) by the Birnbaum-Tingey sum
-- e·Σ_{v=0}^{floor(n(1-e))} C(n,v) (e+v/n)^(v-1) (1-e-v/n)^(n-v), summed in
-- log space (scipy.special.smirnov computes the same sum in double-double
-- arithmetic; the two agree to about 1e-13 relative).
CREATE FUNCTION fm_smirnov_sf(n bigint, e float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    nn  bigint;
    s   float8 := 0;
    lc  float8 := 0;  -- ln C(n, v)
    evn float8;
    om  float8;
    t   float8;
BEGIN
    IF e <= 0 THEN
        RETURN 1.0;
    END IF;
    IF e >= 1 THEN
        RETURN 0.0;
    END IF;
    nn := floor(n * (1.0 - e))::bigint;
    FOR v IN 0 .. nn LOOP
        evn := e + v::float8 / n;
        om := 1.0 - evn;
        IF n - v = 0 THEN
            t := lc + (v - 1) * ln(evn);
            s := s + fm_exp(t);
        ELSIF om > 0 THEN
            t := lc + (v - 1) * ln(evn) + (n - v) * ln(om);
            s := s + fm_exp(t);
        END IF;
        IF v < n THEN
            lc := lc + ln((n - v)::float8 / (v + 1));
        END IF;
    END LOOP;
    RETURN least(greatest(s * e, 0.0), 1.0);
END $$;

-- Square matrix product of two m×m matrices stored row-major in flat arrays,
-- with underflow-safe products. A SQL statement, because the executor does
-- this arithmetic far faster than PL/pgSQL statements would.
CREATE FUNCTION fm_matmul(a float8[], b float8[], m integer) RETURNS float8[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg(s ORDER BY i, j)
    FROM (SELECT ea.o / m AS i, eb.o % m AS j,
                 sum(CASE WHEN x = 0 OR y = 0 THEN 0.0::float8
                          WHEN abs(x) > 1e-150 AND abs(y) > 1e-150 THEN x * y
                          WHEN ln(abs(x)) + ln(abs(y)) < -740.0 THEN 0.0::float8
                          ELSE sign(x) * sign(y) * exp(ln(abs(x)) + ln(abs(y))) END) AS s
          FROM (SELECT x, o - 1 AS o FROM unnest(a) WITH ORDINALITY AS u(x, o)) AS ea
          JOIN (SELECT y, o - 1 AS o FROM unnest(b) WITH ORDINALITY AS u(y, o)) AS eb ON ea.o % m = eb.o / m
          GROUP BY 1, 2) AS q
$$;

-- Kolmogorov CDF P(D_n <= d) by Durbin's matrix method in the form of
-- Marsaglia, Tsang and Wang (2003), scaled as in scipy's _kolmogn_DMTW.
CREATE FUNCTION fm_kolmogn_dmtw_cdf(n bigint, d float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    ep128 CONSTANT float8 := 340282366920938463463374607431768211456.0; -- 2^128
    em128 CONSTANT float8 := 1.0 / 340282366920938463463374607431768211456.0;
    nd float8 := n * d;
    k integer;
    h float8;
    m integer;
    v float8[];
    w float8[];
    hm float8[];
    hp float8[];
    fac float8 := 1.0;
    tt float8;
    nn bigint;
    expnt integer := 0;
    hexpnt integer := 0;
    p float8;
BEGIN
    IF d >= 1.0 THEN
        RETURN 1.0;
    END IF;
    IF nd <= 0.5 THEN
        RETURN 0.0;
    END IF;
    k := ceil(nd)::integer;
    h := k - nd;
    m := 2 * k - 1;
    v := array_fill(0.0::float8, ARRAY[m]);
    w := array_fill(0.0::float8, ARRAY[m]);
    FOR j IN 1 .. m LOOP
        v[j] := 1.0 - fm_powi(h, j);
    END LOOP;
    FOR j IN 1 .. m LOOP
        w[j] := fac;
        fac := fac / j;
        v[j] := v[j] * fac;
    END LOOP;
    tt := fm_powi(greatest(2 * h - 1.0, 0.0), m) - 2 * fm_powi(h, m);
    v[m] := (1.0 + tt) * fac;
    -- H: column i (1..m-1) holds w from row i-1 down; column 0 is v; the
    -- last row is v reversed.
    hm := array_fill(0.0::float8, ARRAY[m * m]);
    FOR i IN 1 .. m - 1 LOOP
        FOR r IN i - 1 .. m - 1 LOOP
            hm[r * m + i + 1] := w[r - i + 2];
        END LOOP;
    END LOOP;
    FOR r IN 0 .. m - 1 LOOP
        hm[r * m + 1] := v[r + 1];
    END LOOP;
    FOR c IN 0 .. m - 1 LOOP
        hm[(m - 1) * m + c + 1] := v[m - c];
    END LOOP;
    hp := array_fill(0.0::float8, ARRAY[m * m]);
    FOR i IN 0 .. m - 1 LOOP
        hp[i * m + i + 1] := 1.0;
    END LOOP;
    nn := n;
    WHILE nn > 0 LOOP
        IF nn % 2 = 1 THEN
            hp := fm_matmul(hp, hm, m);
            expnt := expnt + hexpnt;
        END IF;
        hm := fm_matmul(hm, hm, m);
        hexpnt := hexpnt * 2;
        IF abs(hm[(k - 1) * m + k]) > ep128 THEN
            SELECT array_agg(CASE WHEN abs(x) < 1e-290 THEN 0.0::float8 ELSE x * em128 END ORDER BY o)
              INTO hm FROM unnest(hm) WITH ORDINALITY AS u(x, o);
            hexpnt := hexpnt + 128;
        END IF;
        nn := nn / 2;
    END LOOP;
    p := hp[(k - 1) * m + k];
    FOR i IN 1 .. n LOOP
        p := i * p / n;
        IF abs(p) < em128 THEN
            p := p * ep128;
            expnt := expnt - 128;
        END IF;
    END LOOP;
    IF expnt <> 0 THEN
        p := fm_ldexp(p, expnt);
    END IF;
    RETURN least(greatest(p, 0.0), 1.0);
END $$;

-- Kolmogorov CDF P(D_n <= x) by Pomeranz's recursion (1974), as scipy's
-- _kolmogn_Pomeranz; used for n <= 140.
CREATE FUNCTION fm_kolmogn_pomeranz_cdf(n bigint, x float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    ep128 CONSTANT float8 := 340282366920938463463374607431768211456.0;
    em128 CONSTANT float8 := 1.0 / 340282366920938463463374607431768211456.0;
    t float8 := n * x;
    ll integer;
    f float8;
    g float8;
    ceilf integer;
    roundf integer;
    npwrs integer;
    gpower float8[];
    twogpower float8[];
    onem2gpower float8[];
    pw float8[];
    v0 float8[];
    v1 float8[];
    tmp float8[];
    v0s integer := 0;
    v1s integer := 0;
    tmps integer;
    j1 integer;
    j2 integer;
    k1 integer;
    ln2 integer;
    lo integer;
    alen integer;
    plen integer;
    conv_start integer;
    conv_len integer;
    mx float8;
    expnt integer := 0;
    ans float8;
    ip1div2 integer;
BEGIN
    ll := floor(t)::integer;
    f := t - ll;
    g := least(f, 1.0 - f);
    ceilf := CASE WHEN f > 0 THEN 1 ELSE 0 END;
    roundf := CASE WHEN f > 0.5 THEN 1 ELSE 0 END;
    npwrs := 2 * (ll + 1);
    gpower := array_fill(0.0::float8, ARRAY[npwrs]);
    twogpower := array_fill(0.0::float8, ARRAY[npwrs]);
    onem2gpower := array_fill(0.0::float8, ARRAY[npwrs]);
    gpower[1] := 1.0;
    twogpower[1] := 1.0;
    onem2gpower[1] := 1.0;
    FOR mm IN 1 .. npwrs - 1 LOOP
        gpower[mm + 1] := fm_mul(gpower[mm], g / n) / mm;
        twogpower[mm + 1] := fm_mul(twogpower[mm], 2 * g / n) / mm;
        onem2gpower[mm + 1] := fm_mul(onem2gpower[mm], (1 - 2 * g) / n) / mm;
    END LOOP;
    v0 := array_fill(0.0::float8, ARRAY[npwrs]);
    v1 := array_fill(0.0::float8, ARRAY[npwrs]);
    v1[1] := 1.0;
    -- Row 0's interval.
    j1 := greatest(-ll - ceilf - 1 + 2, 0);
    j2 := least(ll + ceilf - 1, n::integer);
    FOR i IN 1 .. 2 * n + 1 LOOP
        k1 := j1;
        tmp := v0; v0 := v1; v1 := tmp;
        tmps := v0s; v0s := v1s; v1s := tmps;
        v1 := array_fill(0.0::float8, ARRAY[npwrs]);
        ip1div2 := (i + 1) / 2;
        IF (i + 1) % 2 = 0 THEN
            IF ip1div2 = n + 1 THEN
                j1 := n - ll - ceilf - 1;
                j2 := n + ll + ceilf - 1;
            ELSE
                j1 := ip1div2 - 1 - ll - roundf - 1;
                j2 := ip1div2 + ll - 1 + ceilf - 1;
            END IF;
        ELSE
            j1 := ip1div2 - 1 - ll - 1;
            j2 := ip1div2 + ll + roundf - 1;
        END IF;
        j1 := greatest(j1 + 2, 0);
        j2 := least(j2, n::integer);
        IF i = 1 OR i = 2 * n + 1 THEN
            pw := gpower;
        ELSIF i % 2 = 1 THEN
            pw := twogpower;
        ELSE
            pw := onem2gpower;
        END IF;
        ln2 := j2 - k1 + 1;
        IF ln2 > 0 THEN
            lo := k1 - v0s;
            alen := least(ln2, npwrs - lo);
            plen := least(ln2, npwrs);
            conv_start := j1 - k1;
            conv_len := j2 - j1 + 1;
            -- Full convolution of v0[lo : lo+alen) with pw[0 : plen), entries
            -- conv_start .. conv_start+conv_len-1.
            SELECT array_agg(coalesce((SELECT sum(fm_mul(v0[lo + s + 1], pw[conv_start + tt - s + 1]))
                                       FROM generate_series(greatest(0, conv_start + tt - plen + 1),
                                                            least(conv_start + tt, alen - 1)) AS s), 0.0)
                             ORDER BY tt)
              INTO tmp FROM generate_series(0, conv_len - 1) AS tt;
            FOR q IN 1 .. conv_len LOOP
                v1[q] := tmp[q];
            END LOOP;
            SELECT max(u) INTO mx FROM unnest(v1) AS u;
            IF mx > 0 AND mx < em128 THEN
                SELECT array_agg(u * ep128 ORDER BY o) INTO v1 FROM unnest(v1) WITH ORDINALITY AS z(u, o);
                expnt := expnt - 128;
            END IF;
            v1s := v0s + j1 - k1;
        END IF;
    END LOOP;
    ans := v1[n - v1s + 1];
    FOR mm IN 1 .. n LOOP
        IF abs(ans) > ep128 THEN
            ans := fm_mul(ans, em128);
            expnt := expnt + 128;
        END IF;
        ans := ans * mm;
    END LOOP;
    IF expnt <> 0 THEN
        ans := fm_ldexp(ans, expnt);
    END IF;
    RETURN least(greatest(ans, 0.0), 1.0);
END $$;

-- Pelz-Good (1976) approximation of P(D_n <= x), as scipy's _kolmogn_PelzGood
-- (not clipped; the caller clips).
CREATE FUNCTION fm_kolmogn_pelzgood_cdf(n bigint, x float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    pi2 CONSTANT float8 := pi() * pi();
    pi4 CONSTANT float8 := pi() ^ 4;
    pi6 CONSTANT float8 := pi() ^ 6;
    sqrt2pi CONSTANT float8 := sqrt(2 * pi());
    z float8;
    zsq float8;
    z3 float8;
    z4 float8;
    z6 float8;
    qlog float8;
    q float8;
    k1a float8; k1b float8; k2a float8; k2b float8; k2c float8;
    k3a float8; k3b float8; k3c float8; k3d float8;
    kk float8[] := ARRAY[0.0, 0.0, 0.0, 0.0]::float8[];
    maxk integer;
    m float8;
    msq float8;
    qpower float8;
    c float8[];
    k2extra float8 := 0;
    k3extra float8 := 0;
    qp float8;
    sqrt3z float8;
BEGIN
    IF x <= 0.0 THEN
        RETURN 0.0;
    END IF;
    IF x >= 1.0 THEN
        RETURN 1.0;
    END IF;
    z := sqrt(n::float8) * x;
    zsq := z ^ 2;
    z3 := z ^ 3;
    z4 := z ^ 4;
    z6 := z ^ 6;
    qlog := -pi2 / 8 / zsq;
    IF qlog < -708 THEN
        RETURN 0.0;
    END IF;
    q := exp(qlog);
    k1a := -zsq;
    k1b := pi2 / 4;
    k2a := 6 * z6 + 2 * z4;
    k2b := (2 * z4 - 5 * zsq) * pi2 / 4;
    k2c := pi4 * (1 - 2 * zsq) / 16;
    k3d := pi6 * (5 - 30 * zsq) / 64;
    k3c := pi4 * (-60 * zsq + 212 * z4) / 16;
    k3b := pi2 * (135 * z4 - 96 * z6) / 4;
    k3a := -30 * z6 - 90 * z ^ 8;
    maxk := ceil(16 * z / pi())::integer;
    FOR k IN REVERSE maxk .. 1 LOOP
        m := 2 * k - 1;
        msq := m ^ 2;
        qpower := fm_exp(8 * k * qlog);
        c := ARRAY[1.0, k1a + k1b * msq, k2a + k2b * msq + k2c * m ^ 4,
                   k3a + k3b * msq + k3c * m ^ 4 + k3d * m ^ 6];
        FOR i IN 1 .. 4 LOOP
            kk[i] := fm_mul(kk[i], qpower) + c[i];
        END LOOP;
    END LOOP;
    FOR i IN 1 .. 4 LOOP
        kk[i] := fm_mul(fm_mul(kk[i], q), sqrt2pi);
    END LOOP;
    kk[1] := kk[1] / z;
    kk[2] := kk[2] / (6 * z4);
    kk[3] := kk[3] / (72 * z ^ 7);
    kk[4] := kk[4] / (6480 * z ^ 10);
    sqrt3z := sqrt(3.0::float8) * z;
    FOR k IN REVERSE maxk .. 1 LOOP
        qp := fm_exp(k * k * (-pi2 / 2 / zsq));
        k2extra := k2extra + fm_mul(k * k, qp);
        k3extra := k3extra + fm_mul((sqrt3z + pi() * k) * (sqrt3z - pi() * k) * k * k, qp);
    END LOOP;
    kk[3] := kk[3] + fm_mul(k2extra, pi2 * sqrt2pi / (-36 * z3));
    kk[4] := kk[4] + fm_mul(k3extra, pi2 * sqrt2pi / (216 * z6));
    kk[2] := kk[2] / sqrt(n::float8);
    kk[3] := kk[3] / n;
    kk[4] := kk[4] / (n * sqrt(n::float8));
    RETURN kk[1] + kk[2] + kk[3] + kk[4];
END $$;

-- kstwo.sf(x, n): the survival function of the two-sided one-sample K-S
-- statistic D_n, dispatched like scipy's _kolmogn(n, x, cdf=False) (Simard
-- and L'Ecuyer 2011).
CREATE FUNCTION fm_kolmogn_sf(n bigint, x float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    t float8;
    prob float8;
    nxsq float8;
    cdf float8;
BEGIN
    IF n <= 0 THEN
        RETURN 'NaN'::float8;
    END IF;
    IF x >= 1.0 THEN
        RETURN 0.0;
    END IF;
    IF x <= 0.0 THEN
        RETURN 1.0;
    END IF;
    t := n * x;
    IF t <= 1.0 THEN
        -- Ruben-Gambino: 1/2n <= x <= 1/n.
        IF t <= 0.5 THEN
            RETURN 1.0;
        END IF;
        IF n <= 140 THEN
            prob := 1.0;
            FOR i IN 1 .. n LOOP
                prob := fm_mul(prob, i * (1.0 / n) * (2 * t - 1));
            END LOOP;
        ELSE
            prob := fm_exp(fm_log_nfact_div_npow(n) + n * ln(2 * t - 1));
        END IF;
        RETURN least(greatest(1.0 - prob, 0.0), 1.0);
    END IF;
    IF t >= n - 1 THEN
        RETURN least(greatest(2 * fm_powi(1.0 - x, n::integer), 0.0), 1.0);
    END IF;
    IF x >= 0.5 THEN
        RETURN least(greatest(2 * fm_smirnov_sf(n, x), 0.0), 1.0);
    END IF;
    nxsq := t * x;
    IF n <= 140 THEN
        IF nxsq <= 0.754693 THEN
            RETURN least(greatest(1.0 - fm_kolmogn_dmtw_cdf(n, x), 0.0), 1.0);
        END IF;
        IF nxsq <= 4 THEN
            RETURN least(greatest(1.0 - fm_kolmogn_pomeranz_cdf(n, x), 0.0), 1.0);
        END IF;
        RETURN least(greatest(2 * fm_smirnov_sf(n, x), 0.0), 1.0);
    END IF;
    IF nxsq >= 370.0 THEN
        RETURN 0.0;
    END IF;
    IF nxsq >= 2.2 THEN
        RETURN least(greatest(2 * fm_smirnov_sf(n, x), 0.0), 1.0);
    END IF;
    IF nxsq >= 18.0 THEN
        cdf := 1.0;
    ELSIF n <= 100000 AND n * x ^ 1.5 <= 1.4 THEN
        cdf := fm_kolmogn_dmtw_cdf(n, x);
    ELSE
        cdf := fm_kolmogn_pelzgood_cdf(n, x);
    END IF;
    RETURN least(greatest(1.0 - cdf, 0.0), 1.0);
END $$;

-- scipy.stats.ks_2samp(ref, cur).pvalue for a K-S statistic d between
-- samples of n1 and n2 values (method 'auto', two-sided).
CREATE FUNCTION fm_ks_2samp_p(d float8, n1 bigint, n2 bigint) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    g bigint;
    lcm bigint;
    h bigint;
    p float8;
    en float8;
BEGIN
    IF n1 <= 0 OR n2 <= 0 THEN
        RAISE EXCEPTION 'fm_ks_2samp_p: empty sample (n1 %, n2 %)', n1, n2;
    END IF;
    IF greatest(n1, n2) <= 10000 THEN
        g := gcd(n1, n2);
        lcm := (n1 / g) * n2;
        h := round(d * lcm)::bigint; -- round half to even, like np.round
        IF h = 0 THEN
            RETURN 1.0;
        END IF;
        BEGIN
            IF n1 = n2 THEN
                p := fm_ks_prob_outside_square(n1, h);
            ELSE
                p := fm_ks_outer_prob_inside(n1, n2, g, h);
            END IF;
        EXCEPTION WHEN numeric_value_out_of_range THEN
            p := NULL; -- scipy also falls back to the asymptotic form on a floating-point error
        END;
        IF p IS NOT NULL AND p >= 0 AND p <= 1 THEN
            RETURN p;
        END IF;
    END IF;
    en := greatest(n1, n2)::float8 * least(n1, n2) / (n1 + n2);
    RETURN least(greatest(fm_kolmogn_sf(round(en)::bigint, d), 0.0), 1.0);
END $$;

------------------------------------------------------------------------------
-- The per-column drift tests.
--
-- fm_drift_stats(p_input) reads a table (usually a temporary one) with the
-- columns
--     fid integer, is_cat boolean, value float8, r float8, c float8
-- holding, for every feature fid, each distinct value and how many reference
-- (r) and current (c) rows had it; (fid, value) must be unique. It returns one
-- row per feature that has both reference and current rows, with the test
-- Evidently's DataDriftPreset would choose (or the one forced by
-- p_num_stattest / p_cat_stattest), the threshold (the test's default unless
-- p_num_threshold / p_cat_threshold is given) and the verdict.
CREATE FUNCTION fm_drift_stats(
    p_input regclass,
    p_num_stattest text DEFAULT NULL,
    p_cat_stattest text DEFAULT NULL,
    p_num_threshold float8 DEFAULT NULL,
    p_cat_threshold float8 DEFAULT NULL)
RETURNS TABLE (fid integer, column_type text, stattest text, score float8, threshold float8,
               drifted boolean, p_value float8, statistic float8, n_ref bigint, n_cur bigint,
               n_values integer)
-- JIT compilation would cost seconds here: the planner's row estimates for
-- the generated queries are far too high, and the queries are cheap anyway.
LANGUAGE plpgsql VOLATILE SET jit = off AS $fn$
BEGIN
    -- Evidently refuses a test that does not accept the column type
    -- (StatTest.allowed_feature_types): chisquare and z take categorical
    -- columns only, ks and wasserstein numerical ones only.
    IF p_num_stattest IS NOT NULL
       AND p_num_stattest NOT IN ('ks', 'wasserstein', 'jensenshannon', 'psi', 'kl_div') THEN
        RAISE EXCEPTION 'fm_drift_stats: % is not a test for numerical columns (ks, wasserstein, jensenshannon, psi, kl_div)',
            p_num_stattest;
    END IF;
    IF p_cat_stattest IS NOT NULL
       AND p_cat_stattest NOT IN ('chisquare', 'z', 'jensenshannon', 'psi', 'kl_div') THEN
        RAISE EXCEPTION 'fm_drift_stats: % is not a test for categorical columns (chisquare, z, jensenshannon, psi, kl_div)',
            p_cat_stattest;
    END IF;

    -- Fresh temporary tables have no statistics; without them the planner
    -- guesses one row and joins the values to the binned features with a
    -- nested loop (seconds instead of milliseconds).
    EXECUTE format('ANALYZE %s', p_input);
    DROP TABLE IF EXISTS pg_temp.fm_ds_cols;
    -- One pass over the values, sorted per feature: cumulative counts give
    -- the ECDFs (K-S D and W1 = Σ|F_r - F_c|·Δx over the pooled values, as
    -- scipy's _cdf_distance), and the per-feature sums give everything else.
    EXECUTE format($q$
        CREATE TEMP TABLE fm_ds_cols ON COMMIT DROP AS
        WITH v AS (
            SELECT i.fid, i.is_cat, i.value, i.r, i.c,
                   sum(i.r) OVER w AS cr,
                   sum(i.c) OVER w AS cc,
                   lead(i.value) OVER w AS next_value,
                   row_number() OVER w AS rn,
                   sum(i.r) OVER wall AS nr,
                   sum(i.c) OVER wall AS nc,
                   sum(i.r * i.value) OVER wall AS sum_rv
            FROM %s AS i
            WHERE i.r > 0 OR i.c > 0
            WINDOW w AS (PARTITION BY i.fid ORDER BY i.value ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
                   wall AS (PARTITION BY i.fid ORDER BY i.value ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        ), d AS (
            SELECT v.*, v.cr / v.nr - v.cc / v.nc AS cdf_diff, v.value - v.sum_rv / v.nr AS dev
            FROM v
            WHERE v.nr > 0 AND v.nc > 0
        )
        SELECT d.fid,
               bool_or(d.is_cat) AS is_cat,
               max(d.nr) AS nr,
               max(d.nc) AS nc,
               count(*)::integer AS n_values,
               (count(*) FILTER (WHERE d.r > 0))::integer AS ref_nunique,
               min(d.value) AS vmin,
               max(d.value) AS vmax,
               max(abs(d.cdf_diff)) AS ks_d,
               coalesce(sum(abs(d.cdf_diff) * (d.next_value - d.value)), 0) AS w1,
               sqrt(sum(d.r * CASE WHEN abs(d.dev) < 1e-150 THEN 0 ELSE d.dev * d.dev END) / max(d.nr)) AS std_r,
               bool_or(d.r = 0 AND d.c > 0) AS chi_inf,
               sum(CASE WHEN d.r > 0
                        THEN (d.c - d.r * (d.nc / d.nr)) * (d.c - d.r * (d.nc / d.nr)) / (d.r * (d.nc / d.nr))
                        ELSE 0 END) AS chi_stat,
               max(d.r) FILTER (WHERE d.rn = 1) AS r_first,
               max(d.c) FILTER (WHERE d.rn = 1) AS c_first
        FROM d
        GROUP BY d.fid
    $q$, p_input);

    ANALYZE fm_ds_cols;
    ALTER TABLE fm_ds_cols ADD COLUMN stattest text, ADD COLUMN threshold float8,
        ADD COLUMN sturges boolean, ADD COLUMN nb integer, ADD COLUMN step float8,
        ADD COLUMN p_value float8, ADD COLUMN dist float8, ADD COLUMN statistic float8;

    -- Evidently's registry._get_default_stattest: only the reference row
    -- count (<= 1000) and the pooled number of distinct values decide.
    UPDATE fm_ds_cols AS t SET stattest = CASE
        WHEN t.is_cat THEN coalesce(p_cat_stattest,
            CASE WHEN t.nr <= 1000 THEN (CASE WHEN t.n_values > 2 THEN 'chisquare' ELSE 'z' END)
                 ELSE 'jensenshannon' END)
        ELSE coalesce(p_num_stattest,
            CASE WHEN t.nr <= 1000 THEN (CASE WHEN t.n_values <= 2 THEN 'z'
                                              WHEN t.n_values <= 5 THEN 'chisquare'
                                              ELSE 'ks' END)
                 ELSE (CASE WHEN t.n_values <= 5 THEN 'jensenshannon' ELSE 'wasserstein' END) END)
        END;
    UPDATE fm_ds_cols AS t SET threshold = coalesce(
        CASE WHEN t.is_cat THEN p_cat_threshold ELSE p_num_threshold END,
        CASE WHEN t.stattest IN ('ks', 'chisquare', 'z') THEN 0.05 ELSE 0.1 END);

    -- Tests computed from the per-feature sums.
    UPDATE fm_ds_cols AS t SET statistic = t.ks_d, p_value = fm_ks_2samp_p(t.ks_d, t.nr::bigint, t.nc::bigint)
    WHERE t.stattest = 'ks';
    UPDATE fm_ds_cols AS t SET statistic = t.w1, dist = t.w1 / greatest(t.std_r, 0.001)
    WHERE t.stattest = 'wasserstein';
    -- scipy.stats.chisquare: a value seen only in the current data has an
    -- expected count of 0, so the statistic is infinite and p = 0.
    UPDATE fm_ds_cols AS t SET
        statistic = CASE WHEN t.chi_inf THEN 'Infinity'::float8 ELSE t.chi_stat END,
        p_value = CASE WHEN t.chi_inf THEN 0.0 ELSE fm_chi2_sf(t.chi_stat, t.n_values - 1) END
    WHERE t.stattest = 'chisquare';
    -- Evidently's z-test for two proportions: the smallest pooled value
    -- against all others; p = 1 when both samples hold the same single value.
    UPDATE fm_ds_cols AS t SET statistic = z.z, p_value = CASE WHEN t.n_values = 1 THEN 1.0 ELSE fm_norm_2sided_p(z.z) END
    FROM (SELECT s.fid,
                 CASE WHEN s.n_values = 1 THEN 0.0
                      ELSE (s.p1 - s.p2) / sqrt(s.pp * (1 - s.pp) * (1.0 / s.nr + 1.0 / s.nc)) END AS z
          FROM (SELECT c.fid, c.n_values, c.nr, c.nc, p.p1, p.p2, (p.p1 * c.nr + p.p2 * c.nc) / (c.nr + c.nc) AS pp
                FROM fm_ds_cols AS c,
                     LATERAL (SELECT (c.nr - c.r_first) / c.nr AS p1, (c.nc - c.c_first) / c.nc AS p2) AS p
                WHERE c.stattest = 'z') AS s) AS z
    WHERE t.fid = z.fid;

    -- Binned tests (get_binned_data): numerical columns with more than 20
    -- distinct reference values use numpy's Sturges bins over the pooled
    -- data; everything else gets one bin per distinct pooled value.
    UPDATE fm_ds_cols AS t SET sturges = (NOT t.is_cat AND t.ref_nunique > 20)
    WHERE t.stattest IN ('jensenshannon', 'psi', 'kl_div');
    -- np.histogram_bin_edges(bins='sturges'): width = ptp/(log2(n)+1),
    -- nb = ceil(ptp/width) and edges linspace(lo, hi, nb+1). log2 goes
    -- through numeric so that it is exact for powers of two, where the
    -- ceiling would otherwise depend on the last bit.
    UPDATE fm_ds_cols AS t SET nb = b.nb, step = (t.vmax - t.vmin) / b.nb
    FROM (SELECT c.fid, ceil((c.vmax - c.vmin) / ((c.vmax - c.vmin) /
                      (log(2::numeric, (c.nr + c.nc)::numeric)::float8 + 1.0)))::integer AS nb
          FROM fm_ds_cols AS c WHERE c.sturges) AS b
    WHERE t.fid = b.fid;

    IF EXISTS (SELECT 1 FROM fm_ds_cols AS t WHERE t.sturges IS NOT NULL) THEN
        EXECUTE format($q$
            WITH f AS (
                SELECT * FROM fm_ds_cols AS t WHERE t.sturges IS NOT NULL
            ), binned AS (
                -- One bin per distinct value.
                SELECT i.fid, i.r, i.c
                FROM %1$s AS i JOIN f ON f.fid = i.fid AND NOT f.sturges
                WHERE i.r > 0 OR i.c > 0
                UNION ALL
                -- Sturges bins [e_k, e_k+1), the last one closed, with
                -- e_k = k·step + lo as np.linspace computes it. floor() gives
                -- the bin up to rounding; comparing with the edges themselves
                -- settles values that sit on an edge.
                SELECT k.fid, coalesce(sum(x.r), 0), coalesce(sum(x.c), 0)
                FROM (SELECT f.fid, generate_series(0, f.nb - 1) AS k FROM f WHERE f.sturges) AS k
                LEFT JOIN (
                    SELECT e.fid, e.r, e.c,
                           CASE WHEN e.value < e.k0 * e.step + e.vmin THEN e.k0 - 1
                                WHEN e.k0 + 1 < e.nb AND e.value >= (e.k0 + 1) * e.step + e.vmin THEN e.k0 + 1
                                ELSE e.k0 END AS k
                    FROM (SELECT i.fid, i.value, i.r, i.c, f.vmin, f.step, f.nb,
                                 least(greatest(floor((i.value - f.vmin) / f.step)::integer, 0), f.nb - 1) AS k0
                          FROM %1$s AS i JOIN f ON f.fid = i.fid AND f.sturges
                          WHERE i.r > 0 OR i.c > 0) AS e
                ) AS x ON x.fid = k.fid AND x.k = k.k
                GROUP BY k.fid, k.k
            ), pct AS (
                SELECT b.fid, b.r / f.nr AS rp, b.c / f.nc AS cp
                FROM binned AS b JOIN f ON f.fid = b.fid
            ), eps AS (
                -- Zero-fill for PSI and KL (feel_zeroes): each distribution's
                -- zeros become min_nonzero/1e6, or 1e-4 when min_nonzero > 1e-4.
                SELECT p.fid,
                       CASE WHEN min(p.rp) FILTER (WHERE p.rp > 0) <= 0.0001
                            THEN min(p.rp) FILTER (WHERE p.rp > 0) / 1000000 ELSE 0.0001 END AS er,
                       CASE WHEN min(p.cp) FILTER (WHERE p.cp > 0) <= 0.0001
                            THEN min(p.cp) FILTER (WHERE p.cp > 0) / 1000000 ELSE 0.0001 END AS ec,
                       sum(p.rp) AS sr,
                       sum(p.cp) AS sc
                FROM pct AS p GROUP BY p.fid
            ), filled AS (
                SELECT p.fid, p.rp, p.cp, e.sr, e.sc,
                       CASE WHEN p.rp = 0 THEN e.er ELSE p.rp END AS rz,
                       CASE WHEN p.cp = 0 THEN e.ec ELSE p.cp END AS cz
                FROM pct AS p JOIN eps AS e ON e.fid = p.fid
            ), sums AS (
                SELECT z.fid, sum(z.rz) AS srz, sum(z.czz) AS scz
                FROM (SELECT fl.fid, fl.rz, fl.cz AS czz FROM filled AS fl) AS z GROUP BY z.fid
            ), res AS (
                SELECT fl.fid,
                       -- scipy.spatial.distance.jensenshannon: normalise, then
                       -- sqrt((Σ rel_entr(p, m) + Σ rel_entr(q, m)) / 2).
                       sqrt(greatest(sum(
                           CASE WHEN fl.rp > 0 THEN (fl.rp / fl.sr) * ln((fl.rp / fl.sr) / ((fl.rp / fl.sr + fl.cp / fl.sc) / 2.0)) ELSE 0 END
                         + CASE WHEN fl.cp > 0 THEN (fl.cp / fl.sc) * ln((fl.cp / fl.sc) / ((fl.rp / fl.sr + fl.cp / fl.sc) / 2.0)) ELSE 0 END) / 2.0, 0)) AS js,
                       -- PSI: Σ (ref - cur)·ln(ref/cur) over the zero-filled shares.
                       sum((fl.rz - fl.cz) * ln(fl.rz / fl.cz)) AS psi,
                       -- scipy.stats.entropy(ref, cur): KL after renormalising.
                       sum((fl.rz / s.srz) * ln((fl.rz / s.srz) / (fl.cz / s.scz))) AS kl
                FROM filled AS fl JOIN sums AS s ON s.fid = fl.fid
                GROUP BY fl.fid
            )
            UPDATE fm_ds_cols AS t SET dist = CASE t.stattest WHEN 'jensenshannon' THEN r.js
                                                              WHEN 'psi' THEN r.psi
                                                              ELSE r.kl END,
                                       statistic = CASE t.stattest WHEN 'jensenshannon' THEN r.js
                                                                   WHEN 'psi' THEN r.psi
                                                                   ELSE r.kl END
            FROM res AS r WHERE t.fid = r.fid
        $q$, p_input);
    END IF;

    RETURN QUERY
    SELECT t.fid,
           CASE WHEN t.is_cat THEN 'cat' ELSE 'num' END,
           t.stattest,
           coalesce(t.p_value, t.dist),
           t.threshold,
           CASE t.stattest
               WHEN 'ks' THEN t.p_value <= t.threshold
               WHEN 'chisquare' THEN t.p_value < t.threshold
               WHEN 'z' THEN t.p_value < t.threshold
               ELSE t.dist >= t.threshold END,
           t.p_value,
           t.statistic,
           t.nr::bigint,
           t.nc::bigint,
           t.n_values
    FROM fm_ds_cols AS t
    ORDER BY t.fid;
END
$fn$;
