-- 005_feedback.sql: recording ground truth sent back for a request, and the
-- accuracy it implies per model version.

-- Records (or replaces: the latest word wins) the true label of one image of
-- a request. Returns true when the prediction it refers to is in the log.
CREATE FUNCTION fm_feedback_record(p_request_id uuid, p_image_index smallint, p_label smallint,
                                   p_source text DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO feedback AS f (request_id, image_index, label, source)
    VALUES (p_request_id, p_image_index, p_label, p_source)
    ON CONFLICT (request_id, image_index)
    DO UPDATE SET label = excluded.label, source = excluded.source, received_at = now();
    SELECT EXISTS (SELECT 1 FROM predictions AS p
                   WHERE p.request_id = p_request_id AND p.image_index = p_image_index);
$$;

-- Accuracy of each model version on the predictions that received feedback.
CREATE VIEW feedback_accuracy AS
SELECT p.model_version,
       count(*) AS labelled,
       count(*) FILTER (WHERE p.label = f.label) AS correct,
       (count(*) FILTER (WHERE p.label = f.label))::float8 / count(*) AS accuracy,
       min(f.received_at) AS first_feedback,
       max(f.received_at) AS last_feedback
FROM feedback AS f
JOIN predictions AS p USING (request_id, image_index)
GROUP BY p.model_version;
