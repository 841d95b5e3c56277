/** Task statuses for the tests, shaped as the API answers them. */
import type { Task } from '../src/api.ts';

export const ID = '6f1c2a8e-1111-4000-8000-000000000001';

export function task(o: Partial<Task> = {}): Task {
  return {
    task_id: ID,
    task_status: 'STARTED',
    task_result: null,
    state: 'processing',
    video_id: 'v1',
    attempt: 1,
    object_key: 'uploads/x/v.mp4',
    renditions: [],
    planned_renditions: ['360p'],
    manifest: null,
    hls: null,
    thumbnail: null,
    stages: {},
    waiting_for: [],
    error: null,
    ...o,
  };
}
