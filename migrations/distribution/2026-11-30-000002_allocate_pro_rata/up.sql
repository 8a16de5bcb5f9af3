-- The pro-rata split of a payment over an offering's holders, as a SQL
-- function so the rule is versioned with the data; the service checks its
-- result (one row per holder, amounts summing exactly to the total).
--
-- Largest-remainder method: holder i with stake s_i of S = sum(s) first gets
-- floor(total * s_i / S); the units left over (fewer than the number of
-- holders) go one each to the largest remainders (total * s_i mod S), ties
-- broken by holder_id ascending (PostgreSQL orders uuids by their bytes, as
-- Rust's Uuid does). So the amounts sum exactly to total, no one is more than
-- one minor unit from their exact share, and the result is deterministic.
--
-- Products are computed in numeric: total * stake overflows bigint long
-- before real amounts get large, and numeric keeps remainders exact, so ties
-- are true ties. Rows come back in the order of the input arrays.
--
-- Raises (invalid_parameter_value) on a null or negative total, null or
-- negative stakes, null or duplicate holder ids, arrays of different lengths
-- or more than one dimension, and a zero total stake (nothing to split by).
create function allocate_pro_rata(total bigint, holder_ids uuid[], stakes bigint[])
returns table (holder_id uuid, amount_minor bigint)
language plpgsql
immutable
parallel safe
as $$
declare
    stake_sum numeric;
    holder_count integer;
begin
    if total is null or holder_ids is null or stakes is null then
        raise exception 'allocate_pro_rata: arguments must not be null'
            using errcode = 'invalid_parameter_value';
    end if;
    if total < 0 then
        raise exception 'allocate_pro_rata: total must not be negative (got %)', total
            using errcode = 'invalid_parameter_value';
    end if;
    if coalesce(array_ndims(holder_ids), 1) <> 1 or coalesce(array_ndims(stakes), 1) <> 1 then
        raise exception 'allocate_pro_rata: holder_ids and stakes must be one-dimensional arrays'
            using errcode = 'invalid_parameter_value';
    end if;
    holder_count := cardinality(holder_ids);
    if holder_count <> cardinality(stakes) then
        raise exception 'allocate_pro_rata: % holder ids but % stakes', holder_count, cardinality(stakes)
            using errcode = 'invalid_parameter_value';
    end if;
    if exists (select from unnest(holder_ids) as h (id) where h.id is null) then
        raise exception 'allocate_pro_rata: holder ids must not be null'
            using errcode = 'invalid_parameter_value';
    end if;
    if (select count(distinct h.id) from unnest(holder_ids) as h (id)) <> holder_count then
        raise exception 'allocate_pro_rata: holder ids must be distinct'
            using errcode = 'invalid_parameter_value';
    end if;
    if exists (select from unnest(stakes) as s (stake) where s.stake is null or s.stake < 0) then
        raise exception 'allocate_pro_rata: stakes must be non-negative and not null'
            using errcode = 'invalid_parameter_value';
    end if;

    -- sum(bigint) is numeric: it cannot overflow.
    select sum(s.stake) into stake_sum from unnest(stakes) as s (stake);
    if coalesce(stake_sum, 0) = 0 then
        raise exception 'allocate_pro_rata: the total stake is zero; there is nothing to split by'
            using errcode = 'invalid_parameter_value';
    end if;

    return query
        with shares as (
            select
                i.hid,
                i.ord,
                div(total::numeric * i.stake, stake_sum) as base,
                mod(total::numeric * i.stake, stake_sum) as remainder
            from unnest(holder_ids, stakes) with ordinality as i (hid, stake, ord)
        ),
        ranked as (
            select
                s.hid,
                s.ord,
                s.base,
                row_number() over (order by s.remainder desc, s.hid asc) as rank
            from shares s
        ),
        leftover as (
            select total::numeric - sum(s.base) as units from shares s
        )
        select
            r.hid,
            (r.base + case when r.rank <= l.units then 1 else 0 end)::bigint
        from ranked r
        cross join leftover l
        order by r.ord;
end;
$$;
