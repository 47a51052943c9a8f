// Which build this is; the versions of the app differ here.
export const BUILD = '2';
